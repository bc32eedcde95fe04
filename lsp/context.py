"""Repository context for a completion: windows of the code the editor has shown us.

Candidates are the most recently used open documents (at most `max_documents`, like
Copilot's neighbouring tabs), windows around the last edited lines (they outlive a closed
document), and the files the current document imports that lie under its workspace folder
(read from disk). Ranking is codeloop.snippets.rank, the one the trainer uses, so an adapter
learns from the context it is served with.

Cheap per keystroke: a document is cut into windows only when its version changed, an
import is resolved only when the document's import lines changed, and the answer for a
document is kept with what it was computed from (the lines before the cursor's line, the
other candidates' versions): while the user types within a line it is the same list
object, so the prompt's start stays put and the engine's prompt reuse keeps working.
On a new line the ranking is redone, but the list sent last is kept while it is still about
as relevant (`steadier`): a changed list makes the engine read the whole prompt again.
"""
from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from codeloop.snippets import (MAX_SNIPPET_CHARS, MAX_SNIPPET_PATH_CHARS, MIN_SCORE, WINDOW_LINES, Snippet, Window, identifiers,
                               imported_paths, query_text, rank, similarity, windows)
from lsp.documents import Document, Edit
from lsp.workspace import DiskFile, Located, Workspace

MAX_DOCUMENTS = 20  # open documents considered, most recently used first
MAX_RECENT_EDITS = 10  # edited line ranges remembered, across documents
MAX_IMPORTED_FILES = 8  # imported files read from disk per request
MAX_CONTEXT_DOC_CHARS = 500_000  # larger documents are not cut into windows (cost per change)
CLOSED = -1  # a recent edit's window taken from a document that is closed now
# The server refuses a request whose snippet or path is longer than codeloop.snippets'
# limits: such windows (minified code) are never sent.

# The snippets sent last are sent again while they score at least this share of a fresh
# ranking's (summed similarity with the lines before the cursor): a new list costs the
# engine a whole prompt read (~1 s for 1,500 tokens on 2 cores), a slightly better one buys
# little (docs/benchmarks.md, "Repository context").
STEADY_SHARE = 0.7

# Lines that may hold an import: imported_paths reads nothing else, so these lines decide
# what a document imports, and are compared instead of the whole text.
_IMPORT_LINE = re.compile(r"^[^\n]*(?:\bimport\b|\brequire\(|\bfrom\s+[\"'])[^\n]*$", re.M)
_WORD = re.compile(r"\w+")


@dataclass
class _Tracked:
    doc: Document  # the document store's object: its text is the current one
    generation: int = 0  # bumped on every change (a version may be missing or repeat)
    windows: list[Window] | None = None
    windowed: int = -1  # the generation `windows` were cut from


@dataclass
class _RecentEdit:
    uri: str
    line: int  # the last line the edit touched
    window: Window | None = None
    cut_from: int = -2  # the document's generation the window was cut from, or CLOSED


@dataclass
class _Imports:
    import_lines: str
    paths: tuple[str, ...]  # relative to the document's workspace folder
    complete: bool  # False: the folder was still being listed; resolved again next time


@dataclass
class _Answer:
    key: tuple
    snippets: list[Snippet] = field(default_factory=list)


def steadier(previous: list[Snippet], fresh: list[Snippet], sendable: list[Window], query: frozenset[str]) -> list[Snippet]:
    """`previous` (the list sent last) while each of its windows still exists unchanged and
    scores at least MIN_SCORE with `query`, and together they score at least STEADY_SHARE of
    `fresh`'s; else `fresh`."""
    if not previous or previous == fresh:
        return previous or fresh
    by_text = {(w.filepath, w.text): w for w in sendable}
    scores = []
    for snippet in previous:
        window = by_text.get((snippet.filepath, snippet.text))
        if window is None:  # the file changed or left: the text is no longer what it holds
            return fresh
        scores.append(similarity(query, window))
    if min(scores) < MIN_SCORE:
        return fresh
    best = sum(similarity(query, by_text[(s.filepath, s.text)]) for s in fresh)
    return previous if sum(scores) >= STEADY_SHARE * best else fresh


class ContextIndex:
    def __init__(self, workspace: Workspace | None = None, *, max_documents: int = MAX_DOCUMENTS,
                 max_recent_edits: int = MAX_RECENT_EDITS) -> None:
        self.workspace = workspace if workspace is not None else Workspace()
        self.max_documents = max_documents
        self._docs: OrderedDict[str, _Tracked] = OrderedDict()  # least recently used first
        self._edits: deque[_RecentEdit] = deque(maxlen=max_recent_edits)  # most recent first
        self._imports: dict[str, _Imports] = {}
        self._answers: dict[str, _Answer] = {}

    def __len__(self) -> int:
        return len(self._docs)

    # --- fed by the document notifications -------------------------------------------------

    def opened(self, doc: Document) -> None:
        self._docs[doc.uri] = _Tracked(doc)
        self._docs.move_to_end(doc.uri)
        self._free_beyond_cap()

    def changed(self, doc: Document, edits: list[Edit]) -> None:
        tracked = self._docs.get(doc.uri)
        if tracked is None:
            self.opened(doc)
            tracked = self._docs[doc.uri]
        tracked.doc = doc
        tracked.generation += 1
        self._docs.move_to_end(doc.uri)
        for edit in edits:
            if edit.start == 0 and edit.end > 0 and edit.new_text == doc.text:
                continue  # the whole text sent again: no place was edited
            line = doc.text.count("\n", 0, edit.start) + edit.new_text.count("\n")
            self._note_edit(doc.uri, line)

    def closed(self, uri: str) -> None:
        tracked = self._docs.pop(uri, None)
        if tracked is not None:
            # Its recent edits stay (they age out of the deque): cut their windows now.
            for recent in self._edits:
                if recent.uri == uri:
                    self._edit_window(recent, tracked)
                    recent.cut_from = CLOSED
        self._imports.pop(uri, None)
        self._answers.pop(uri, None)

    # --- asked for by completion requests ------------------------------------------------

    def snippets_for(self, uri: str, prefix: str, *, budget_chars: int, max_snippets: int) -> list[Snippet]:
        """The best windows of other code for a completion in `uri` with this prefix (never
        from `uri` itself). The same list object as last time while nothing it depends on
        changed."""
        if budget_chars <= 0 or max_snippets <= 0:
            return []
        current = self._docs.get(uri)
        if current is not None:
            self._docs.move_to_end(uri)
        query = query_text(prefix)
        here = self.workspace.locate(uri)
        others = [t for u, t in reversed(self._docs.items()) if u != uri and not t.doc.stale][: self.max_documents]
        recent = [r for r in self._edits if r.uri != uri and self._in_sync(r)]
        imported = self._imported_files(uri, here, current, {t.doc.uri for t in others})

        key = (query, budget_chars, max_snippets,
               tuple((t.doc.uri, t.generation) for t in others),
               tuple((r.uri, r.line, r.cut_from if r.cut_from == CLOSED else self._docs[r.uri].generation) for r in recent),
               tuple((path, disk.stamp) for path, disk in imported))
        answer = self._answers.get(uri)
        if answer is not None and answer.key == key:
            return answer.snippets
        if not identifiers(query):  # nothing to compare with (the file's first lines)
            snippets: list[Snippet] = []
        else:
            candidates: list[Window] = []
            for tracked in others:
                candidates += self._windows(tracked)
            for r in recent:
                window = self._edit_window(r, self._docs.get(r.uri))
                if window is not None:
                    candidates.append(window)
            for _, disk in imported:
                candidates += disk.windows
            sendable = [w for w in candidates if len(w.text) <= MAX_SNIPPET_CHARS and len(w.filepath) <= MAX_SNIPPET_PATH_CHARS]
            snippets = rank(prefix, sendable, budget_chars=budget_chars, max_snippets=max_snippets)
            if answer is not None and answer.key[1:3] == key[1:3]:  # same budget
                snippets = steadier(answer.snippets, snippets, sendable, identifiers(query))
        self._answers[uri] = _Answer(key, snippets)
        return snippets

    # --- helpers ---------------------------------------------------------------------------

    def _windows(self, tracked: _Tracked) -> list[Window]:
        if tracked.windowed != tracked.generation or tracked.windows is None:
            text = tracked.doc.text
            path = self.workspace.locate(tracked.doc.uri).filepath
            tracked.windows = windows(path, text) if len(text) <= MAX_CONTEXT_DOC_CHARS else []
            tracked.windowed = tracked.generation
        return tracked.windows

    def _in_sync(self, recent: _RecentEdit) -> bool:
        """Its window can be cut: the document is closed (cut then) or open and in sync."""
        tracked = self._docs.get(recent.uri)
        return recent.cut_from == CLOSED or (tracked is not None and not tracked.doc.stale)

    def _note_edit(self, uri: str, line: int) -> None:
        """Remember an edit at `line`; one near a remembered one of the same document moves it."""
        for recent in list(self._edits):
            if recent.uri == uri and abs(recent.line - line) < WINDOW_LINES // 2:
                self._edits.remove(recent)
        self._edits.appendleft(_RecentEdit(uri, line))

    def _edit_window(self, recent: _RecentEdit, tracked: _Tracked | None) -> Window | None:
        """WINDOW_LINES lines around the edited line, cut again when the document changed."""
        if recent.cut_from == CLOSED or tracked is None:
            return recent.window
        if recent.cut_from != tracked.generation:
            doc = tracked.doc
            starts = doc.starts()
            first = max(0, min(recent.line, len(starts) - 1) - WINDOW_LINES // 2)
            last = min(len(starts), first + WINDOW_LINES)
            body = doc.text[starts[first]:starts[last] - 1 if last < len(starts) else len(doc.text)]
            path = self.workspace.locate(recent.uri).filepath
            recent.window = Window(path, first, body, identifiers(body)) if body.strip() else None
            recent.cut_from = tracked.generation
        return recent.window

    def _imported_files(self, uri: str, here: Located, current: _Tracked | None, open_uris: set[str]) -> list[tuple[str, DiskFile]]:
        """(path, DiskFile) of the files the current document imports, under its folder and
        not open (open ones are candidates already), read from disk (cached by mtime)."""
        if current is None or here.root is None:
            return []
        import_lines = "\n".join(_IMPORT_LINE.findall(current.doc.text))
        if not import_lines:
            return []
        known = self._imports.get(uri)
        if known is None or known.import_lines != import_lines or not known.complete:
            known = self._imports[uri] = self._resolve_imports(here, import_lines)
        open_paths = {self.workspace.locate(u).filepath for u in open_uris}
        found = []
        for path in known.paths:
            if path in open_paths:
                continue
            disk = self.workspace.file_windows(here.root, path)
            if disk is not None:
                found.append((path, disk))
                if len(found) >= MAX_IMPORTED_FILES:
                    break
        return found

    def _resolve_imports(self, here: Located, import_lines: str) -> _Imports:
        """imported_paths over the files the import lines may name: the open documents under
        the same folder, and the folder's files whose name is a word of those lines."""
        assert here.root is not None
        names = self.workspace.file_names(here.root)
        known = set()
        for tracked in self._docs.values():
            where = self.workspace.locate(tracked.doc.uri)
            if where.root == here.root:
                known.add(where.filepath)
        for word in set(_WORD.findall(import_lines)):
            known.update((names or {}).get(word, ()))
        paths = imported_paths(here.filepath, import_lines, known)
        return _Imports(import_lines, tuple(paths), names is not None)

    def _free_beyond_cap(self) -> None:
        """Documents beyond the most recent `max_documents` keep no windows (memory)."""
        beyond = len(self._docs) - self.max_documents
        for tracked in self._docs.values():
            if beyond <= 0:
                break
            tracked.windows, tracked.windowed = None, -1
            beyond -= 1
