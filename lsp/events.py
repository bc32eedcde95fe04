"""Telemetry events from the editor to `POST /v1/events`, through the spool, in order.

`record()` writes the event to the spool (durable at once) and wakes the sender. The sender
batches what is on disk, posts it, and marks it delivered only after the server's answer,
which the server gives after its commit. While the server is down it retries with backoff;
nothing is lost and order is kept. A batch the server refuses (4xx) is split to find the
events it refuses; those go to `rejected.jsonl` next to the spool with the reason, so one bad
event never blocks the rest.
"""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from lsp.client import EventsRefused, ServerClient, ServerUnavailable
from lsp.spool import EventSpool, Pending

log = logging.getLogger(__name__)
BATCH = 500
MAX_BACKOFF_S = 30.0


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class EventSender:
    def __init__(self, spool: EventSpool, client: ServerClient, flush_ms: int) -> None:
        self.spool = spool
        self.client = client
        self.flush_s = flush_ms / 1000
        self.sent = 0
        self.refused = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._backoff = 0.0

    def record(self, kind: str, completion_id: str, **fields) -> dict:
        """Log one event; `at` is stamped now so a replay later is recognised as the same event."""
        event = {"completion_id": completion_id, "kind": kind, "at": utc_now(),
                 **{k: v for k, v in fields.items() if v is not None}}
        self.spool.append(event)
        self._wake.set()
        return event

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="codeloop-events")
            self._wake.set()  # replay whatever an earlier run left

    async def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Try to deliver what is pending (briefly), then stop; the rest stays on disk."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await asyncio.wait_for(self.drain(), flush_timeout_s)
        except (asyncio.TimeoutError, ServerUnavailable):
            log.info("%d events stay in the spool until the server is back", self.spool.unsent_count())

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.flush_s:
                await asyncio.sleep(self.flush_s)  # gather a batch
            try:
                await self.drain()
                self._backoff = 0.0
            except ServerUnavailable as exc:
                self._backoff = min(MAX_BACKOFF_S, max(0.5, self._backoff * 2))
                log.info("server unavailable for events (%s); retrying in %.1fs", exc, self._backoff)
                await asyncio.sleep(self._backoff)
                self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the sender die: the events are on disk
                log.exception("event sender failed; retrying")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def drain(self) -> None:
        """Send everything on disk, oldest first; raises ServerUnavailable if the server is down."""
        while (batch := await asyncio.to_thread(self.spool.pending, BATCH)) is not None:
            await self._deliver(batch)
            await asyncio.to_thread(self.spool.acknowledge, batch)

    async def _deliver(self, batch: Pending) -> None:
        if not batch.events:
            return
        try:
            await self.client.post_events(batch.events)
            self.sent += len(batch.events)
            return
        except EventsRefused as exc:
            if len(batch.events) == 1:
                self._set_aside(batch.events[0], str(exc))
                return
        for event in batch.events:  # find the ones refused; keep order for the rest
            try:
                await self.client.post_events([event])
                self.sent += 1
            except EventsRefused as exc:
                self._set_aside(event, str(exc))

    def _set_aside(self, event: dict, reason: str) -> None:
        self.refused += 1
        log.error("server refused event %s of %s: %s", event.get("kind"), event.get("completion_id"), reason)
        path = Path(self.spool.folder) / "rejected.jsonl"
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, "reason": reason}) + "\n")
