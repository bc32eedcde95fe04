"""The telemetry writer: one background thread owns the only write connection.

Completions are fire-and-forget (a completion request never waits on the database).
Events come back as a Future that resolves once the transaction holding them has
COMMITTED, so the HTTP layer acknowledges an event only when it is on disk. One FIFO
queue holds both, and a batch inserts its completions before its events in the same
transaction: an event is never committed before the completion it refers to.

When a write fails (disk full, IO error, a DuckDB "fatal" that invalidates the database)
the rows stay at the head of the queue and are retried with backoff; the futures of the
failed attempt are failed at once (the API answers 503, the client retries, and events are
idempotent), and `status()` reports unhealthy until a write succeeds again.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, TypeVar

import duckdb

from . import queries
from .db import open_db, reopen_db
from .ingest import insert_completions, insert_events
from .rows import completions_table, events_table, normalize_completion, normalize_event, utcnow

log = logging.getLogger("codeloop.feedback")
T = TypeVar("T")


class TelemetryWriteError(Exception):
    """The events were not stored (yet); retrying the request is safe."""


@dataclass
class _Events:
    rows: list[dict[str, Any]]
    future: Future[int] | None  # None once failed: the rows stay queued, the caller was told


@dataclass
class _Call:
    fn: Callable[[duckdb.DuckDBPyConnection], Any]
    future: Future[Any]


_Item = dict[str, Any] | _Events | _Call  # a dict is a completion row


class TelemetryWriter:
    def __init__(
        self,
        db_path: Path | str,
        *,
        batch_max: int = 20_000,
        flush_interval_s: float = 0.05,
        store_code: bool = True,
        max_queued: int = 1_000_000,
        remember: int = 100_000,
        retry_max_s: float = 5.0,
    ) -> None:
        self.db_path = Path(db_path)
        self.batch_max = batch_max
        self.flush_interval_s = flush_interval_s
        self.store_code = store_code
        self.max_queued = max_queued  # rows; beyond it new rows are refused, not buffered
        self.retry_max_s = retry_max_s
        self._remember_max = remember
        # Recent completion id -> (text_chars, created_at): validates events for completions
        # still queued (an LSP reports "shown" within milliseconds) without a DB read, and
        # bounds the completion_outcomes update of a batch to the table's recent tail.
        self._recent: OrderedDict[str, tuple[int | None, datetime]] = OrderedDict()
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._queued_completions = self._queued_events = 0
        self._written_completions = self._written_events = self._dropped_completions = 0
        self._last_error: str | None = None
        self._last_error_at: str | None = None
        self._healthy = True
        self._closing = False
        self._closed = False
        self._give_up_at = float("inf")
        self._thread: threading.Thread | None = None
        self._con_lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._root: duckdb.DuckDBPyConnection | None = None  # hands out reader cursors
        # Closed with the connection: a used cursor left open keeps DuckDB's instance (and
        # its file lock) alive after close(), which would block reopening the file.
        self._readers: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> TelemetryWriter:
        """Open (create, migrate) the database and start the thread; TelemetryDBError if not."""
        with self._cond:
            if self._closing:
                raise RuntimeError("telemetry writer is closed")
            if self._thread is not None:
                return self
        self._set_connection(open_db(self.db_path))
        self._thread = threading.Thread(target=self._run, name="codeloop-telemetry-writer", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then close. Idempotent. Rows still failing to write
        after `timeout` seconds are given up (their futures fail) and logged."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._give_up_at = time.monotonic() + timeout
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        else:
            self._abandon("telemetry writer closed before it was started")
        self._closed = True

    def __enter__(self) -> TelemetryWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- producers (any thread) ----------------------------------------------------------
    def add_completion(self, row: dict[str, Any]) -> None:
        """Queue a completion row; never waits on the database. ValueError for a bad row."""
        normalized = normalize_completion(row, store_code=self.store_code)
        with self._cond:
            self._check_open()
            if self._queued_completions + self._queued_events >= self.max_queued:
                self._dropped_completions += 1
                return
            self._queue.append(normalized)
            self._queued_completions += 1
            # setdefault: a re-sent id is ignored by the database, so is its new created_at
            self._recent.setdefault(normalized["id"], (normalized["text_chars"], normalized["created_at"]))
            if len(self._recent) > self._remember_max:
                self._recent.popitem(last=False)
            self._cond.notify()

    def add_events(self, rows: list[dict[str, Any]]) -> Future[int]:
        """Queue events; the future gives how many were new, once they are committed.
        ValueError (raised here) for a bad row; the future fails with TelemetryWriteError
        when the write fails. From asyncio: `await asyncio.wrap_future(...)`."""
        received = utcnow()
        normalized = [normalize_event(r, received) for r in rows]
        future: Future[int] = Future()
        if not normalized:
            future.set_result(0)
            return future
        with self._cond:
            self._check_open()
            full = self._queued_completions + self._queued_events + len(normalized) > self.max_queued
            if not full:
                self._queue.append(_Events(normalized, future))
                self._queued_events += len(normalized)
                self._cond.notify()
        if full:
            future.set_exception(TelemetryWriteError(f"telemetry queue full ({self.max_queued} rows); retry later"))
        return future

    def execute(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> Future[T]:
        """Run `fn(write_connection)` in the writer thread, in its own transaction (fn must
        not BEGIN/COMMIT nor keep the connection), after everything queued before it."""
        future: Future[T] = Future()
        with self._cond:
            self._check_open()
            self._queue.append(_Call(fn, future))
            self._cond.notify()
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is committed."""
        self.execute(lambda con: None).result(timeout)

    # --- readers (any thread) -------------------------------------------------------------
    def reader(self) -> duckdb.DuckDBPyConnection:
        """A new cursor on the database for one thread / one request; close it when done.
        It sees committed data only and dies if the writer has to reopen the database."""
        with self._con_lock:
            if self._root is None:
                raise TelemetryWriteError(f"telemetry database unavailable: {self._last_error or 'not started'}")
            cursor = self._root.cursor()
            self._readers.add(cursor)
            return cursor

    def completion_lengths(self, ids: list[str]) -> dict[str, int | None]:
        """text_chars of the known ids (queued or stored); unknown ids are absent."""
        found: dict[str, int | None] = {}
        with self._cond:
            missing = [i for i in ids if i not in self._recent]
            found.update((i, self._recent[i][0]) for i in ids if i in self._recent)
        if missing:
            cursor = self.reader()
            try:
                found.update(queries.completion_lengths(cursor, missing))
            finally:
                cursor.close()
        return found

    def status(self) -> dict[str, Any]:
        with self._cond:
            running = self._thread is not None and self._thread.is_alive() and not self._closing
            return {
                "queued_completions": self._queued_completions,
                "queued_events": self._queued_events,
                "written_completions": self._written_completions,
                "written_events": self._written_events,
                "dropped_completions": self._dropped_completions,
                "last_error": self._last_error,
                "last_error_at": self._last_error_at,
                "healthy": running and self._healthy,
            }

    # --- the writer thread ---------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closing:
            raise RuntimeError("telemetry writer is closed")

    def _run(self) -> None:
        backoff = 0.0
        while True:
            batch = self._next_batch()
            if batch is None:
                break
            try:
                ok = self._run_call(batch[0]) if isinstance(batch[0], _Call) else self._write(batch)
            except Exception as exc:  # never let the thread die: that would lose every row
                log.exception("telemetry writer: unexpected error")
                self._failed(exc, [])
                ok = False
            if ok:
                backoff = 0.0
                continue
            if time.monotonic() >= self._give_up_at:
                self._abandon(f"telemetry writer closed while writes were failing: {self._last_error}")
                break
            backoff = min(max(backoff * 2, 0.05), self.retry_max_s)
            time.sleep(min(backoff, max(0.0, self._give_up_at - time.monotonic())))
        self._drop_connection()

    def _next_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            if isinstance(self._queue[0], _Call):
                return [self._queue[0]]
            # Linger a little so that a burst becomes one transaction, not many.
            deadline = time.monotonic() + self.flush_interval_s
            while not self._closing and self._queued_completions + self._queued_events < self.batch_max:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Item] = []
            rows = 0
            for item in self._queue:  # a request is never split: a batch may pass batch_max
                if isinstance(item, _Call) or rows >= self.batch_max:
                    break
                batch.append(item)
                rows += 1 if isinstance(item, dict) else len(item.rows)
            return batch

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._set_connection(reopen_db(self.db_path))  # after a fatal error
        assert self._con is not None
        return self._con

    def _write(self, batch: list[_Item]) -> bool:
        completions = [i for i in batch if isinstance(i, dict)]
        requests = [i for i in batch if isinstance(i, _Events)]
        try:
            ctable = completions_table(completions) if completions else None
            etable = events_table([r.rows for r in requests]) if requests else None
        except Exception as exc:  # rows were validated; if one still fails, retrying cannot help
            log.exception("telemetry writer: dropping %d unconvertible items", len(batch))
            self._failed(exc, requests)
            with self._cond:
                for _ in batch:
                    self._queue.popleft()
                self._queued_completions -= len(completions)
                self._queued_events -= sum(len(r.rows) for r in requests)
            return True
        ats = [row["at"] for r in requests for row in r.rows]
        with self._cond:
            ids = {row["completion_id"] for r in requests for row in r.rows}
            created = {i: self._recent[i][1] for i in ids if i in self._recent}
        fatal = False
        try:
            con = self._connection()
            con.execute("BEGIN")
            inserted = insert_completions(con, ctable) if ctable is not None else 0
            counts = insert_events(con, etable, ats, len(requests), created) if etable is not None else []
            con.execute("COMMIT")
        except Exception as exc:
            fatal = isinstance(exc, duckdb.FatalException) or "invalidated" in str(exc)
            # DuckDB says so when the commit reached the WAL and only the automatic
            # checkpoint after it failed: the rows are durable, do not fail them.
            if not (fatal and "COMMIT succeeded" in str(exc)):
                self._rollback()
                self._failed(exc, requests)
                if fatal:
                    self._drop_connection()
                return False
            self._failed(exc, [])
            self._drop_connection()
        with self._cond:
            for _ in batch:
                self._queue.popleft()
            self._queued_completions -= len(completions)
            self._queued_events -= sum(len(r.rows) for r in requests)
            self._written_completions += inserted
            self._written_events += sum(counts)
            self._healthy = not fatal
        for request, count in zip(requests, counts):
            if request.future is not None:
                request.future.set_result(count)
        return True

    def _run_call(self, call: _Call) -> bool:
        try:
            con = self._connection()
            con.execute("BEGIN")
            result = call.fn(con)
            con.execute("COMMIT")
        except Exception as exc:
            self._rollback()
            if isinstance(exc, duckdb.FatalException) or "invalidated" in str(exc):
                self._failed(exc, [])
                self._drop_connection()
            call.future.set_exception(exc)
        else:
            call.future.set_result(result)
        with self._cond:
            self._queue.popleft()
        return True  # admin calls are not retried: the caller sees the error

    def _rollback(self) -> None:
        try:
            if self._con is not None:
                self._con.abort()  # a half-read result would make DuckDB refuse the ROLLBACK
                self._con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # no transaction open, or the connection is already unusable

    def _failed(self, exc: BaseException, requests: list[_Events]) -> None:
        message = f"{type(exc).__name__}: {exc}"
        futures = []
        with self._cond:
            self._last_error, self._last_error_at, self._healthy = message, utcnow().isoformat(), False
            for request in requests:
                if request.future is not None:
                    futures.append(request.future)
                    request.future = None
        log.warning("telemetry write failed (rows kept, will retry): %s", message)
        error = TelemetryWriteError(f"telemetry write failed, events not stored: {message}")
        for future in futures:
            future.set_exception(error)

    def _abandon(self, reason: str) -> None:
        with self._cond:
            items = list(self._queue)
            self._queue.clear()
            lost = self._queued_completions + self._queued_events
            self._queued_completions = self._queued_events = 0
        if lost:
            log.error("%s; %d telemetry rows lost", reason, lost)
        for item in items:
            future = item.future if isinstance(item, (_Events, _Call)) else None
            if future is not None and not future.done():
                future.set_exception(TelemetryWriteError(reason))

    def _set_connection(self, con: duckdb.DuckDBPyConnection) -> None:
        with self._con_lock:
            self._con, self._root = con, con.cursor()

    def _drop_connection(self) -> None:
        with self._con_lock:
            con, self._con, self._root = self._con, None, None
            readers, self._readers = list(self._readers), weakref.WeakSet()
        for cursor in readers:
            try:
                cursor.close()
            except duckdb.Error:
                pass
        if con is not None:
            try:
                con.close()  # also closes every reader cursor made from it
            except duckdb.Error as exc:
                log.warning("closing the telemetry database: %s", exc)
