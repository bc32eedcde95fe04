"""What became of each suggestion: shown, typed ahead, accepted, rejected, retained.

Plain logic over documents and edits, no LSP types, so tests drive it directly. Events go
out through `emit(kind, completion_id, **fields)`; timers through `schedule(delay, fn)`.

- shown: the first time a completion id is returned to the editor.
- typing ahead: edits that type the suggestion's next characters keep it alive; its
  `typed` count moves on (the editor keeps showing the rest, and we answer from it).
- rejected: a shown suggestion that is superseded (another suggestion, or a request it
  cannot answer) or typed over (an edit that does not continue it); "dismissed" when the
  editor says so explicitly.
- accepted / partial: through the `codeloop.accept` command.
- retained: after an accept, the accepted span is followed through every edit; at each
  configured age the share of the accepted characters still present is reported.
"""
from __future__ import annotations

import difflib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from lsp.documents import Document, Edit

Emit = Callable[..., object]
Schedule = Callable[[float, Callable[[], None]], object]
RECENT = 2000  # suggestions remembered for late accepts


@dataclass
class Shown:
    completion_id: str
    doc: Document
    origin: int  # offset where the suggestion's text starts
    text: str
    typed: int = 0  # characters of it the user has typed since it was shown
    shown_at: float = field(default_factory=time.monotonic)
    closed: bool = False  # accepted or rejected: no more events from edits

    @property
    def cursor(self) -> int:
        return self.origin + self.typed

    def elapsed_ms(self) -> float:
        return round((time.monotonic() - self.shown_at) * 1000, 1)


@dataclass
class Watch:
    """An accepted span followed through edits: [start, end) in the current text."""

    completion_id: str
    doc: Document
    accepted: str
    start: int
    end: int
    waiting_for_insert: bool = False

    def apply(self, edit: Edit) -> None:
        delta = len(edit.new_text) - (edit.end - edit.start)
        if self.waiting_for_insert:
            # The accept command came before the edit that inserts the text.
            if edit.start == edit.end == self.start and edit.new_text.startswith(self.accepted[:1]):
                self.end = self.start + len(edit.new_text)
                self.waiting_for_insert = False
            elif edit.end <= self.start:
                self.start += delta
                self.end += delta
            return
        if edit.end <= self.start:  # before the span (an insertion at its start too)
            self.start += delta
            self.end += delta
        elif edit.start >= self.end:
            pass
        else:  # the edit overlaps the span: the span now covers what replaced it
            new_end = self.end + delta if edit.end <= self.end else edit.start + len(edit.new_text)
            self.start = min(self.start, edit.start)
            self.end = max(self.start, new_end)

    def retained_ratio(self) -> float:
        if not self.accepted or self.waiting_for_insert:
            return 0.0
        # Bound the work: a span that grew far beyond the accepted text cannot match more.
        now = self.doc.text[self.start:min(self.end, self.start + 4 * len(self.accepted) + 64)]
        matcher = difflib.SequenceMatcher(None, self.accepted, now, autojunk=False)
        kept = sum(block.size for block in matcher.get_matching_blocks())
        return round(min(1.0, kept / len(self.accepted)), 4)


class Tracker:
    def __init__(self, emit: Emit, schedule: Schedule, retention_s: tuple[float, ...]) -> None:
        self.emit = emit
        self.schedule = schedule
        self.retention_s = retention_s
        self.active: dict[str, Shown] = {}  # uri -> the suggestion visible there
        self.recent: OrderedDict[str, Shown] = OrderedDict()
        self.watches: list[Watch] = []

    # --- from the completion pipeline -----------------------------------------------------
    def shown(self, doc: Document, completion_id: str, origin: int, text: str, typed: int = 0) -> Shown:
        current = self.active.get(doc.uri)
        if current is not None and current.completion_id == completion_id and current.origin == origin:
            return current
        self.supersede(doc.uri)
        item = Shown(completion_id, doc, origin, text, typed)
        self.active[doc.uri] = item
        if completion_id not in self.recent:
            self.emit("shown", completion_id)
        self.recent[completion_id] = item
        self.recent.move_to_end(completion_id)
        while len(self.recent) > RECENT:
            self.recent.popitem(last=False)
        return item

    def typing_ahead(self, doc: Document, offset: int) -> Shown | None:
        """The visible suggestion if the user has typed only its next characters up to `offset`."""
        item = self.active.get(doc.uri)
        if item is None or item.closed or item.doc is not doc or offset != item.cursor or item.typed >= len(item.text):
            return None
        if doc.text[item.origin:offset] != item.text[:item.typed]:
            return None
        return item

    def supersede(self, uri: str) -> None:
        item = self.active.pop(uri, None)
        if item is not None and not item.closed:
            item.closed = True
            self.emit("rejected", item.completion_id, elapsed_ms=item.elapsed_ms())

    # --- from the editor ----------------------------------------------------------------------
    def edited(self, doc: Document, edits: list[Edit]) -> None:
        item = self.active.get(doc.uri)
        for edit in edits:
            if item is not None and not item.closed:
                if edit.start == edit.end == item.cursor and item.text.startswith(edit.new_text, item.typed) and edit.new_text:
                    item.typed += len(edit.new_text)  # typed (or inserted) the suggestion's next characters
                elif edit.end <= item.origin and edit.start < item.origin:
                    item.origin += len(edit.new_text) - (edit.end - edit.start)  # an edit above it
                else:
                    self.supersede(doc.uri)  # typed over
                    item = None
            for watch in self.watches:
                if watch.doc is doc:
                    watch.apply(edit)

    def closed(self, uri: str) -> None:
        self.supersede(uri)

    def dismissed(self, completion_id: str) -> bool:
        item = self.recent.get(completion_id)
        if item is None:
            return False
        if not item.closed:
            item.closed = True
            self.emit("dismissed", completion_id, elapsed_ms=item.elapsed_ms())
        if self.active.get(item.doc.uri) is item:
            del self.active[item.doc.uri]
        return True

    def accepted(self, completion_id: str, accepted_chars: int | None = None) -> bool:
        """The editor ran `codeloop.accept`; False for an id this server never showed."""
        item = self.recent.get(completion_id)
        if item is None:
            return False
        length = len(item.text)
        chars = length if accepted_chars is None else max(0, min(accepted_chars, length))
        item.closed = True
        if self.active.get(item.doc.uri) is item:
            del self.active[item.doc.uri]
        if chars >= length:
            self.emit("accepted", completion_id, elapsed_ms=item.elapsed_ms(), accepted_chars=length)
        else:
            self.emit("partial", completion_id, elapsed_ms=item.elapsed_ms(), accepted_chars=chars)
        if chars:
            self._watch(item, item.text[:chars])
        return True

    # --- retention ------------------------------------------------------------------------------
    def _watch(self, item: Shown, accepted: str) -> None:
        doc, start = item.doc, item.origin
        present = doc.text[start:start + len(accepted)] == accepted
        if not present:  # the editor moved it (auto-indent, for example): look nearby
            found = doc.text.find(accepted, max(0, start - 200), start + len(accepted) + 200)
            if found >= 0:
                start, present = found, True
        watch = Watch(item.completion_id, doc, accepted, start, start + (len(accepted) if present else 0),
                      waiting_for_insert=not present)
        # A later (larger) partial accept of the same suggestion replaces the earlier watch.
        self.watches = [w for w in self.watches if w.completion_id != item.completion_id]
        self.watches.append(watch)
        last = self.retention_s[-1]
        for age in self.retention_s:
            self.schedule(age, lambda age=age: self._report(watch, age, final=age == last))

    def _report(self, watch: Watch, age: float, final: bool) -> None:
        if watch not in self.watches:
            return  # replaced by a later accept of the same suggestion
        self.emit("retained", watch.completion_id, retained_ratio=watch.retained_ratio(), age_s=age)
        if final and watch in self.watches:
            self.watches.remove(watch)
