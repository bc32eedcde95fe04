"""Erase stored code text older than `retention_days`: at start-up, then every hour.

Lengths, hashes, events and every count stay, so metrics and experiment reports do not
change. The erasing is a write, so it goes through the telemetry writer (its one thread owns
the DuckDB file), in chunks, so that completions and events queued meanwhile never wait
behind one long UPDATE.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from feedback.rows import utcnow
from server.metrics import ServerMetrics

log = logging.getLogger("codeloop.retention")

# Code a little older than retention_days may live up to this much longer.
RETENTION_CHECK_S = 3600.0
# Completions erased per writer transaction.
CHUNK = 10_000


class RetentionJob:
    def __init__(self, writer, days: int, metrics: ServerMetrics, *, interval_s: float = RETENTION_CHECK_S, chunk: int = CHUNK):
        if days < 1:
            raise ValueError("retention needs days >= 1 (0 means keep forever: start no job)")
        self.writer = writer  # feedback.writer.TelemetryWriter
        self.days, self.metrics, self.interval_s, self.chunk = days, metrics, interval_s, chunk

    async def run_once(self) -> int:
        """Erase the code of every completion older than the retention; returns how many."""
        cutoff = utcnow() - timedelta(days=self.days)
        total = 0
        while True:
            erased = await asyncio.wrap_future(self.writer.expire_code(cutoff, self.chunk))
            self.metrics.code_expired.inc(erased)
            total += erased
            if erased < self.chunk:
                break
        if total:
            log.info("retention: erased the code of %d completions older than %d days", total, self.days)
        return total

    async def run(self) -> None:
        """run_once now and every interval_s, until cancelled."""
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the database may be failing for now: the next round retries
                log.warning("retention: erasing code older than %d days failed (will retry): %s", self.days, exc)
            await asyncio.sleep(self.interval_s)
