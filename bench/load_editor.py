"""The simulated editor of bench/load.py: a typist plus the parts of `codeloop lsp` that shape
the load (debounce, superseding, typing ahead, event batches, Retry-After). See bench/load.py."""
from __future__ import annotations

import asyncio
import random
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx

from lsp.config import LspConfig

REPO = Path(__file__).resolve().parent.parent
KEY_S = (0.030, 0.150)  # between keystrokes
LINE_PAUSE_S = (2.0, 8.0)  # after Enter
LSP_DEFAULTS = LspConfig()
DEBOUNCE_S = LSP_DEFAULTS.debounce_ms / 1000
TIMEOUT_S = LSP_DEFAULTS.timeout_ms / 1000
EVENT_FLUSH_S = LSP_DEFAULTS.event_flush_ms / 1000
# What the language server asks automatic triggers to be answered within (whole suggestions
# when None): the latency budget, and the line budget for multi-line suggestions.
BUDGETS = {"max_latency_ms": LSP_DEFAULTS.latency_budget_ms, "line_latency_ms": LSP_DEFAULTS.line_budget_ms}
RETAINED_AFTER_S = 30.0
PREFIX_CHARS, SUFFIX_CHARS, MAX_TOKENS = 1500, 500, 32  # as bench/lsp_typist.py
P_ACCEPT_WRONG, P_DISMISS = 0.15, 0.10
SOURCES = ("server", "lsp", "feedback", "trainer", "codeloop")


@dataclass
class Stats:
    keystrokes: int = 0
    sent: int = 0  # completion requests that went out (after the debounce)
    served: int = 0  # 200
    empty: int = 0  # 200 with an empty suggestion
    too_many: int = 0  # 429
    server_errors: int = 0  # 5xx, completions and events
    other_4xx: int = 0
    cancelled: int = 0  # superseded by a keystroke while in flight: the HTTP request was closed
    debounced: int = 0  # superseded during the debounce: never sent
    backing_off: int = 0  # not sent: a Retry-After was still running
    timeouts: int = 0
    conn_errors: int = 0
    latency_ms: list = field(default_factory=list)  # served requests, client side
    queue_ms: list = field(default_factory=list)  # served requests, server's timings
    outcomes: dict = field(default_factory=dict)  # event kind -> count
    event_posts: int = 0
    events_sent: int = 0  # distinct events that went out at least once
    event_429: int = 0
    event_503: int = 0
    event_refused: int = 0  # events in batches refused with a 4xx (409 when telemetry is off)
    event_refusal_codes: dict = field(default_factory=dict)
    acked: set = field(default_factory=set)  # (completion_id, kind) acknowledged by the server
    unacked_at_end: int = 0


def pick_sources() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", *(f"{d}/*.py" for d in SOURCES)], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / p for p in listed.stdout.split() if (REPO / p).stat().st_size > 3000]


def retry_after(resp: httpx.Response) -> float:
    try:
        return max(0.0, float(resp.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class Editor:
    def __init__(self, index: int, url: str, files: list[Path], seed: int, stats: Stats, telemetry: bool):
        self.rng = random.Random(seed * 1000 + index)
        self.user = f"load-{seed}-{index:03d}"
        self.http = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(TIMEOUT_S + 2, connect=2.0),
                                      limits=httpx.Limits(max_connections=8, max_keepalive_connections=4))
        self.files, self.stats, self.telemetry = files, stats, telemetry
        self.events: list[dict] = []
        self.pending: asyncio.Task | None = None
        self.in_flight = False
        self.shown: dict | None = None  # {id, text, typed, at}
        self.quiet_until = 0.0  # Retry-After of a 429 on completions
        self.events_quiet_until = 0.0
        self.timers: list[asyncio.Task] = []
        self._new_file()

    def _new_file(self) -> None:
        path = self.rng.choice(self.files)
        text = path.read_text()
        starts = [i + 1 for i, c in enumerate(text[: len(text) // 2]) if c == "\n"] or [0]
        start = self.rng.choice(starts)
        end = min(len(text), start + 2000)
        self.path, self.language = str(path.relative_to(REPO)), "python"
        self.before, self.todo, self.after = text[:start], text[start:end], text[end:]
        self.typed = ""  # what the editor now holds between before and after (accepts included)

    # -- typing ------------------------------------------------------------------------
    async def run(self, deadline: float) -> None:
        flusher = asyncio.create_task(self._flush_loop(deadline))
        try:
            while time.monotonic() < deadline:
                if not self.todo:
                    self._supersede()
                    self._new_file()
                pause = self._keystroke()
                self.pending = asyncio.create_task(self._request())
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        finally:
            self._supersede()
            for t in self.timers:
                t.cancel()
            await flusher

    def _keystroke(self) -> float:
        """One keystroke (or Tab/Escape on a shown suggestion); returns the wait before the next."""
        self.stats.keystrokes += 1
        self._supersede()
        if self.shown is not None and self._decide():
            return self.rng.uniform(*KEY_S)
        key = self.todo[0]
        if key == "\n":  # Enter plus the next line's indentation, as an editor's auto-indent
            key += self.todo[1:][: len(self.todo[1:]) - len(self.todo[1:].lstrip(" "))]
        self.todo, self.typed = self.todo[len(key):], self.typed + key
        if self.shown is not None:
            rest = self.shown["text"][self.shown["typed"]:]
            if rest.startswith(key) and len(rest) > len(key):
                self.shown["typed"] += len(key)  # typing ahead: it stays
            else:
                self._close_shown("rejected")  # typed over
        return self.rng.uniform(*LINE_PAUSE_S) if key.startswith("\n") else self.rng.uniform(*KEY_S)

    def _decide(self) -> bool:
        """Tab, a partial accept or Escape instead of the next keystroke; False: type on."""
        rest = self.shown["text"][self.shown["typed"]:]
        if rest and self.todo.startswith(rest):
            return self._accept(rest, "accepted", len(rest), consumed=len(rest))
        match = 0
        while match < min(len(rest), len(self.todo)) and rest[match] == self.todo[match]:
            match += 1
        words = rest[:match].rfind(" ")
        if words > 0:  # the suggestion starts right: take its matching words
            return self._accept(rest[:words + 1], "partial", words + 1, consumed=words + 1)
        roll = self.rng.random()
        if roll < P_ACCEPT_WRONG:
            return self._accept(rest, "accepted", len(rest), consumed=0)
        if roll < P_ACCEPT_WRONG + P_DISMISS:
            self._close_shown("dismissed")
            return True
        return False

    def _accept(self, text: str, kind: str, chars: int, consumed: int) -> bool:
        shown = self.shown
        self.typed += text
        self.todo = self.todo[consumed:]
        self._close_shown(kind, accepted_chars=shown["typed"] + chars)
        self.timers.append(asyncio.create_task(self._retained(shown["id"], text)))
        return True

    async def _retained(self, completion_id: str, text: str) -> None:
        await asyncio.sleep(RETAINED_AFTER_S)
        still = text in self.typed[-(len(text) + 2000):]
        self._event(completion_id, "retained", retained_ratio=1.0 if still else 0.0, age_s=RETAINED_AFTER_S)

    def _close_shown(self, kind: str, **fields) -> None:
        shown, self.shown = self.shown, None
        self._event(shown["id"], kind, elapsed_ms=round((time.monotonic() - shown["at"]) * 1000, 1), **fields)

    def _event(self, completion_id: str, kind: str, **fields) -> None:
        self.stats.outcomes[kind] = self.stats.outcomes.get(kind, 0) + 1
        self.events.append({"completion_id": completion_id, "kind": kind, "at": now_iso(), **fields})

    def _supersede(self) -> None:
        if self.pending is not None and not self.pending.done():
            if self.in_flight:
                self.stats.cancelled += 1
            else:
                self.stats.debounced += 1
            self.pending.cancel()  # closes the HTTP request: the server cancels the generation
        self.pending, self.in_flight = None, False

    # -- completions -------------------------------------------------------------------
    async def _request(self) -> None:
        if self.shown is not None:
            return  # typing ahead: the editor answers from the visible suggestion
        await asyncio.sleep(DEBOUNCE_S)
        if time.monotonic() < self.quiet_until:
            self.stats.backing_off += 1
            return
        doc_prefix = self.before + self.typed
        body = {"segments": {"prefix": doc_prefix[-PREFIX_CHARS:], "suffix": self.after[:SUFFIX_CHARS],
                             "filepath": self.path, "language": self.language},
                "user": self.user, "client": "bench-load/1", "max_tokens": MAX_TOKENS,
                **{name: ms for name, ms in BUDGETS.items() if ms}}
        self.in_flight = True
        self.stats.sent += 1
        started = time.monotonic()
        try:
            resp = await asyncio.wait_for(self.http.post("/v1/completions", json=body), TIMEOUT_S)
        except TimeoutError:
            self.stats.timeouts += 1
            return
        except httpx.HTTPError:
            self.stats.conn_errors += 1
            return
        finally:
            self.in_flight = False
        s = self.stats
        if resp.status_code == 200:
            s.served += 1
            s.latency_ms.append((time.monotonic() - started) * 1000)
            data = resp.json()
            s.queue_ms.append(data["timings"]["queue_ms"])
            text = data["choices"][0]["text"] if data["choices"] else ""
            if not text:
                s.empty += 1
                return
            self.shown = {"id": data["id"], "text": text, "typed": 0, "at": time.monotonic()}
            self._event(data["id"], "shown")
        elif resp.status_code == 429:
            s.too_many += 1
            self.quiet_until = time.monotonic() + retry_after(resp)
        elif resp.status_code >= 500:
            s.server_errors += 1
        else:
            s.other_4xx += 1

    # -- events ------------------------------------------------------------------------
    async def _flush_loop(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(EVENT_FLUSH_S)
            await self.flush_once()

    async def flush_once(self) -> bool:
        """One POST of the oldest pending events; True when nothing is left to send."""
        if not self.events:
            return True
        if time.monotonic() < self.events_quiet_until:
            return False
        batch = self.events[:1000]
        s = self.stats
        s.event_posts += 1
        s.events_sent += sum(1 for e in batch if not e.get("_sent"))
        for e in batch:
            e["_sent"] = True
        try:
            resp = await self.http.post("/v1/events", json={"events": [{k: v for k, v in e.items() if k != "_sent"} for e in batch]})
        except httpx.HTTPError:
            s.conn_errors += 1
            self.events_quiet_until = time.monotonic() + 1.0
            return False
        if resp.status_code == 200:
            s.acked.update((e["completion_id"], e["kind"]) for e in batch)
        elif resp.status_code in (429, 503):  # keep them, retry after Retry-After
            s.event_429 += resp.status_code == 429
            s.event_503 += resp.status_code == 503
            s.server_errors += resp.status_code == 503
            self.events_quiet_until = time.monotonic() + retry_after(resp)
            return False
        elif resp.status_code >= 500:
            s.server_errors += 1
            self.events_quiet_until = time.monotonic() + 1.0
            return False
        else:  # refused: sending them again will not help (409 when telemetry is off)
            s.event_refused += len(batch)
            s.event_refusal_codes[resp.status_code] = s.event_refusal_codes.get(resp.status_code, 0) + len(batch)
        del self.events[:len(batch)]
        return not self.events

    async def final_flush(self, until: float) -> None:
        while time.monotonic() < until and not await self.flush_once():
            await asyncio.sleep(0.2)
        self.stats.unacked_at_end += len(self.events)
        await self.http.aclose()
