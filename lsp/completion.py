"""From a cursor position to a suggestion: typing-ahead, cache, debounce, cancel, HTTP.

One `Completer` per language server. For each request, in order:
1. typing ahead: the user typed the visible suggestion's next characters, so the rest of
   it is the answer (no model call);
2. otherwise the visible suggestion is rejected as superseded;
3. the LRU cache keyed by the prompt (the repository context included: `lsp/context.py`);
4. automatic triggers wait `debounce_ms`; a newer request for the same document
   supersedes this one (it answers empty), and if it had reached the server its HTTP
   request is closed, which the server turns into a cancelled generation;
5. the server, with a timeout: slow or down gives an empty answer, never a hang.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass

from lsp.cache import LRUCache, prompt_key
from lsp.client import ServerClient, ServerUnavailable, Suggestion
from lsp.config import LspConfig
from lsp.context import ContextIndex
from lsp.documents import Document, DocumentError, DocumentStore
from lsp.tracking import Tracker

log = logging.getLogger(__name__)

# The prefix window's start moves in steps of 1/WINDOW_STEPS of its size, to a line start,
# rather than with every keystroke: prompts that start the same way let the engine reuse
# what it read for the previous one (the embedded engine's prefix cache, vLLM's prefix caching).
WINDOW_STEPS = 4


def prefix_start(text: str, origin: int, size: int) -> int:
    """Where the prefix sent for a cursor at `origin` starts: at most `size` characters back,
    and the same offset while the cursor moves on by up to size / WINDOW_STEPS characters."""
    if origin <= size:
        return 0
    step = max(1, size // WINDOW_STEPS)
    start = -(-(origin - size) // step) * step  # rounded up to a multiple of step
    # Then the next line start, unless that leaves less than half the window (long lines).
    newline = text.find("\n", start - 1, origin - size // 2)
    return newline + 1 if newline != -1 else start


@dataclass
class Stats:
    requests: int = 0
    typeahead_hits: int = 0
    cache_hits: int = 0
    debounced: int = 0  # superseded while waiting out the debounce: never sent
    model_calls: int = 0  # HTTP completion requests sent
    with_context: int = 0  # of those, the ones that carried repository context (segments.snippets)
    cancelled: int = 0  # HTTP requests closed early (superseded or cancelled by the editor)
    failures: int = 0  # server down, slow or erroring: answered empty
    suggestions: int = 0  # requests answered with a suggestion
    latency_ms_sum: float = 0.0  # request received -> answer, for answered ones

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    """A suggestion placed in the document: replace [start, end) with insert_text."""

    completion_id: str
    insert_text: str
    start: int
    end: int
    source: str  # "typeahead", "cache" or "server"


@dataclass(frozen=True)
class Selected:
    """The editor's open completion popup: its selected item replaces [start, end) with text."""

    start: int
    end: int
    text: str


class Completer:
    def __init__(self, config: LspConfig, store: DocumentStore, tracker: Tracker, client: ServerClient,
                 context: ContextIndex | None = None) -> None:
        self.config = config
        self.store = store
        self.tracker = tracker
        self.client = client
        self.context = context if context is not None else ContextIndex()
        self.cache: LRUCache[Suggestion] = LRUCache(config.cache_size)
        self.stats = Stats()
        self._latest: dict[str, asyncio.Event] = {}  # uri -> "superseded" flag of its newest request

    def reconfigure(self, config: LspConfig, client: ServerClient) -> None:
        if config.cache_size != self.config.cache_size:
            self.cache = LRUCache(config.cache_size)
        self.config, self.client = config, client

    def position(self, uri: str, line: int, character: int) -> tuple[Document, int]:
        """The document and cursor offset; DocumentError for an unknown document or bad position."""
        doc = self.store.get(uri)
        return doc, doc.offset_at(line, character, strict=True)

    async def complete(self, doc: Document, offset: int, *, automatic: bool, selected: Selected | None = None) -> Answer | None:
        started = time.monotonic()
        self.stats.requests += 1
        answer = await self._complete(doc, offset, automatic, selected)
        if answer is not None:
            self.stats.suggestions += 1
            self.stats.latency_ms_sum += (time.monotonic() - started) * 1000
        return answer

    async def _complete(self, doc: Document, offset: int, automatic: bool, selected: Selected | None) -> Answer | None:
        cfg = self.config
        if doc.stale or len(doc.text) > cfg.max_document_chars or not cfg.completes(doc.language_id):
            return None
        superseded = self._supersede_previous(doc.uri)

        if selected is None and (item := self.tracker.typing_ahead(doc, offset)) is not None:
            self.stats.typeahead_hits += 1
            return Answer(item.completion_id, item.text[item.typed:], offset, offset, "typeahead")
        self.tracker.supersede(doc.uri)

        if selected is not None:
            if not (0 <= selected.start <= offset and selected.end <= len(doc.text)):
                raise DocumentError("selectedCompletionInfo.range does not contain the cursor")
            origin, head = selected.start, selected.text
        else:
            origin, head = offset, ""
        prefix = doc.text[prefix_start(doc.text, origin, cfg.prefix_chars):origin] + head
        suffix = doc.text[offset:offset + cfg.suffix_chars]
        # An answer cut short by the latency budget must not stand in for an invoked one.
        budget = cfg.latency_budget_ms if automatic else cfg.invoked_budget_ms
        snippets = self.context.snippets_for(doc.uri, prefix, budget_chars=cfg.context_chars, max_snippets=cfg.context_snippets)
        # Equal prefixes with other context are other prompts: the snippets are part of the key.
        # Without a latency budget the user waits for whole suggestions: no line budget either.
        line_budget = cfg.line_budget_ms if automatic and cfg.latency_budget_ms else None
        key = prompt_key(prefix, suffix, doc.language_id, cfg.max_tokens, (budget, line_budget), cfg.server_url, tuple(snippets))

        suggestion = self.cache.get(key)
        if suggestion is not None:
            self.stats.cache_hits += 1
            return self._show(doc, origin, offset, head, suggestion, "cache")

        if automatic and cfg.debounce_ms:
            try:
                await asyncio.wait_for(superseded.wait(), cfg.debounce_ms / 1000)
            except asyncio.TimeoutError:
                pass
            except asyncio.CancelledError:
                self.stats.debounced += 1  # the editor cancelled it while it waited: never sent
                raise
        if superseded.is_set():
            self.stats.debounced += 1
            return None

        segments: dict = {"prefix": prefix, "suffix": suffix, "filepath": _filepath(doc.uri), "language": doc.language_id or None}
        if snippets:  # left out when empty: a server from before segments.snippets still answers
            segments["snippets"] = [s.to_dict() for s in snippets]
            self.stats.with_context += 1
        body = {"segments": segments, "user": cfg.user, "client": cfg.client}
        if cfg.max_tokens:
            body["max_tokens"] = await self.client.allowed_max_tokens(cfg.max_tokens)
        if budget:
            body["max_latency_ms"] = budget
        if line_budget:
            body["line_latency_ms"] = line_budget
        suggestion = await self._ask_server(body, superseded)
        if suggestion is None:
            return None
        self.cache.put(key, suggestion)
        if superseded.is_set():
            return None
        return self._show(doc, origin, offset, head, suggestion, "server")

    def _show(self, doc: Document, origin: int, offset: int, head: str, suggestion: Suggestion, source: str) -> Answer:
        text = head + suggestion.text
        typed = offset - origin if doc.text[origin:offset] == text[:offset - origin] else 0
        self.tracker.shown(doc, suggestion.completion_id, origin, text, typed)
        return Answer(suggestion.completion_id, text, origin, offset, source)

    def _supersede_previous(self, uri: str) -> asyncio.Event:
        previous = self._latest.get(uri)
        if previous is not None and self.config.cancel_superseded:
            previous.set()
        flag = self._latest[uri] = asyncio.Event()
        return flag

    async def _ask_server(self, body: dict, superseded: asyncio.Event) -> Suggestion | None:
        self.stats.model_calls += 1
        call = asyncio.ensure_future(self.client.complete(body))
        stop = asyncio.ensure_future(superseded.wait())
        try:
            done, _ = await asyncio.wait({call, stop}, timeout=self.config.timeout_ms / 1000, return_when=asyncio.FIRST_COMPLETED)
            if call in done:
                return call.result()
            if stop in done:
                self.stats.cancelled += 1
            else:
                self.stats.failures += 1
                log.warning("no completion within %d ms; answering empty", self.config.timeout_ms)
            return None
        except ServerUnavailable as exc:
            self.stats.failures += 1
            log.warning("completion server unavailable (%s); answering empty", exc)
            return None
        except asyncio.CancelledError:
            self.stats.cancelled += 1  # the editor cancelled the request ($/cancelRequest)
            raise
        finally:
            # Closing the HTTP request is what makes the server stop generating.
            for task in (call, stop):
                if not task.done():
                    task.cancel()


def _filepath(uri: str) -> str:
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return uri
