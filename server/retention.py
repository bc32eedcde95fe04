"""Erase stored code text older than `retention_days`: at start-up, then every hour.

Lengths, hashes, events and every count stay, so metrics and experiment reports do not
change. The erasing is a write, so it goes through the telemetry writer (its one thread owns
the DuckDB file), in chunks, so that completions and events queued meanwhile never wait
behind one long UPDATE.

The same cut applies to the copies under data_dir (training runs' telemetry examples and
exports, feedback/copies.py). And since erased text stays in the file's free blocks until
the file is rewritten, the file is rewritten (feedback/compact.py) after a round that erased
something, at most once a day: a rewrite holds writes back for as long as it takes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from pathlib import Path

from feedback import copies
from feedback.rows import utcnow
from server.metrics import ServerMetrics

log = logging.getLogger("codeloop.retention")

# Code a little older than retention_days may live up to this much longer.
RETENTION_CHECK_S = 3600.0
# Completions erased per writer transaction.
CHUNK = 10_000
# At most one rewrite of the database file per this long.
COMPACT_EVERY_S = 86_400.0


class RetentionJob:
    def __init__(self, writer, days: int, metrics: ServerMetrics, *, data_dir: Path | None = None,
                 interval_s: float = RETENTION_CHECK_S, chunk: int = CHUNK, compact_every_s: float = COMPACT_EVERY_S):
        if days < 1:
            raise ValueError("retention needs days >= 1 (0 means keep forever: start no job)")
        self.writer = writer  # feedback.writer.TelemetryWriter
        self.days, self.metrics, self.interval_s, self.chunk = days, metrics, interval_s, chunk
        self.data_dir, self.compact_every_s = data_dir, compact_every_s
        self._uncompacted = 0  # completions erased since the file was last rewritten
        self._compacted_at = float("-inf")

    async def run_once(self) -> int:
        """Erase the code of every completion older than the retention, and the copies of it;
        returns how many completions."""
        cutoff = utcnow() - timedelta(days=self.days)
        total = 0
        while True:
            erased = await asyncio.wrap_future(self.writer.expire_code(cutoff, self.chunk))
            self.metrics.code_expired.inc(erased)
            total += erased
            if erased < self.chunk:
                break
        copied = await asyncio.to_thread(copies.expire, self.data_dir, cutoff) if self.data_dir else 0
        if total or copied:
            log.info("retention: erased the code of %d completions and %d copied rows older than %d days",
                     total, copied, self.days)
        self._uncompacted += total
        if self._uncompacted and time.monotonic() - self._compacted_at >= self.compact_every_s:
            await asyncio.wrap_future(self.writer.compact())
            self._uncompacted, self._compacted_at = 0, time.monotonic()
        return total

    async def run(self) -> None:
        """run_once now and every interval_s, until cancelled."""
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the database may be failing for now: the next round retries
                log.warning("retention: erasing code older than %d days failed (will retry): %s", self.days, exc)
            await asyncio.sleep(self.interval_s)
