"""The telemetry writer: one background thread owns the only write connection.

Completions are fire-and-forget (a completion request never waits on the database).
Events come back as a Future that resolves once the transaction holding them has
COMMITTED, so the HTTP layer acknowledges an event only when it is on disk. One FIFO
(batches.py) holds both, and a batch inserts its completions before its events in the same
transaction: an event is never committed before the completion it refers to.

When a write fails (disk full, IO error, a DuckDB "fatal" that invalidates the database)
the rows stay at the head of the queue and are retried with backoff; the futures of the
failed attempt are failed at once (the API answers 503, the client retries, and events are
idempotent), and `status()` reports unhealthy until a write succeeds again. After a fatal
error the thread reopens the database even with nothing queued, so that readers and the
health status come back without waiting for the next row.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter, OrderedDict
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, TypeVar

import duckdb

from . import compact, queries
from .batches import CallItem, EventsItem, Item, WriteQueue
from .db import open_db, reopen_db
from .ingest import insert_completions, insert_events
from .journal import CompletionJournal, journal_path
from .privacy import Forgotten, expire_code, forget_user
from .rows import completions_table, events_table, normalize_completion, normalize_event, utcnow

log = logging.getLogger("codeloop.feedback")
T = TypeVar("T")


class TelemetryWriteError(Exception):
    """The events were not stored (yet); retrying the request is safe."""


def _fatal(exc: BaseException) -> bool:
    """DuckDB invalidated the database instance: only a reconnect recovers."""
    return isinstance(exc, duckdb.FatalException) or "invalidated" in str(exc)


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
        # Beside the database: completion rows on disk before their answer leaves (journal.py).
        self.journal = CompletionJournal(journal_path(self.db_path))
        self.store_code = store_code
        self.retry_max_s = retry_max_s
        self._queue = WriteQueue(batch_max, flush_interval_s, max_queued)
        self._lock = threading.Lock()  # guards what follows, up to the connection
        # Recent completion id -> (text_chars, created_at): validates events for completions
        # still queued (an LSP reports "shown" within milliseconds) without a DB read, and
        # bounds the completion_outcomes update of a batch to the table's recent tail.
        # Recent completions' (text_chars, created_at, user_id), for checking events against them.
        self._recent: OrderedDict[str, tuple[int | None, datetime, str | None]] = OrderedDict()
        self._remember = remember
        self._written_completions = self._written_events = self._dropped_completions = 0
        self._last_error: str | None = None
        self._last_error_at: str | None = None
        self._healthy = True
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
        if self._queue.closing:
            raise RuntimeError("telemetry writer is closed")
        if self._thread is None:
            self._set_connection(open_db(self.db_path))
            compact.remove_leftover(self.db_path)  # a crash mid-rewrite left a copy of the old file
            self._replay_journal()
            self._thread = threading.Thread(target=self._run, name="codeloop-telemetry-writer", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then close. Idempotent. Rows still failing to write
        after `timeout` seconds are given up (their futures fail) and logged."""
        if not self._queue.closing:
            self._give_up_at = time.monotonic() + timeout
            self._queue.close()
        if self._thread is not None:
            self._thread.join()
        else:
            self._abandon("telemetry writer closed before it was started")

    def __enter__(self) -> TelemetryWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _replay_journal(self) -> None:
        """Commit the completion rows a killed process answered but had not written yet."""
        rows = self.journal.open()
        if rows:
            con = self._connection()
            con.execute("BEGIN")
            inserted = insert_completions(con, completions_table(rows))
            con.execute("COMMIT")
            log.warning("telemetry: %d completions answered before the last stop were not written; "
                        "%d now are (from %s)", len(rows), inserted, self.journal.path)
            self.journal.settled(len(rows))

    # --- producers (any thread) ----------------------------------------------------------
    def add_completion(self, row: dict[str, Any]) -> Counter:
        """Queue a completion row, its secrets scrubbed; never waits on the database.
        ValueError for a bad row. Returns the secrets replaced, by kind."""
        normalized, secrets = normalize_completion(row, store_code=self.store_code)
        cid = normalized["id"]
        with self._lock:  # remembered first: the writer thread may take the row at once
            known = cid in self._recent
            if not known:  # the database ignores a re-sent id, so its new created_at too
                self._recent[cid] = (normalized["text_chars"], normalized["created_at"], normalized.get("user_id"))
                if len(self._recent) > self._remember:
                    self._recent.popitem(last=False)
        self.journal.append(normalized)
        if not self._queue.put(normalized):
            self.journal.settled(1)
            with self._lock:
                self._dropped_completions += 1
                if not known:
                    self._recent.pop(cid, None)
        return secrets

    def add_events(self, rows: list[dict[str, Any]]) -> Future[int]:
        """Queue events; the future gives how many were new, once they are committed.
        ValueError (raised here) for a bad row; the future fails with TelemetryWriteError
        when the write fails. From asyncio: `await asyncio.wrap_future(...)`."""
        received = utcnow()
        normalized = [normalize_event(r, received) for r in rows]
        future: Future[int] = Future()
        if not normalized:
            future.set_result(0)
        elif not self._queue.put(EventsItem(normalized, future)):
            future.set_exception(TelemetryWriteError(f"telemetry queue full ({self._queue.max_queued} rows); retry later"))
        return future

    def execute(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> Future[T]:
        """Run `fn(write_connection)` in the writer thread, in its own transaction (fn must
        not BEGIN/COMMIT nor keep the connection), after everything queued before it."""
        future: Future[T] = Future()
        self._queue.put(CallItem(fn, future))
        return future

    def forget_user(self, user: str) -> Future[Forgotten]:
        """Delete the user's completions and events (those queued before this call too), and
        forget their ids, so that a late event for one is refused as unknown."""

        def run(con: duckdb.DuckDBPyConnection) -> Forgotten:
            forgotten = forget_user(con, user)
            with self._lock:
                for cid in forgotten.ids:
                    self._recent.pop(cid, None)
            return forgotten

        return self.execute(run)

    def compact(self) -> Future[None]:
        """Rewrite the database file with only its live rows (feedback/compact.py), after
        everything queued before; writes wait meanwhile, reads in flight may fail (retry them)."""
        def run(con: duckdb.DuckDBPyConnection) -> None:
            fresh = compact.copy_live_rows(con, self.db_path)
            self._drop_connection()
            try:
                compact.put_in_place(fresh, self.db_path)
            finally:  # on failure the old file is still there: serve on with it
                self._set_connection(reopen_db(self.db_path))

        future: Future[None] = Future()
        self._queue.put(CallItem(run, future, transaction=False))
        return future

    def expire_code(self, older_than: datetime, limit: int = 10_000) -> Future[int]:
        """Erase the code text of at most `limit` completions created before `older_than`."""
        return self.execute(lambda con: expire_code(con, older_than, limit))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is committed."""
        self.execute(lambda con: None).result(timeout)

    # --- readers (any thread) -------------------------------------------------------------
    def reader(self) -> duckdb.DuckDBPyConnection:
        """A new cursor for one thread / one request; close it when done (contextlib.closing).
        It sees committed data only, and dies if the writer has to reopen the database."""
        with self._con_lock:
            if self._root is None:
                raise TelemetryWriteError(f"telemetry database unavailable: {self._last_error or 'not started'}")
            cursor = self._root.cursor()
            self._readers.add(cursor)
            return cursor

    def completion_lengths(self, ids: list[str]) -> dict[str, int | None]:
        """text_chars of the known ids (queued or stored); unknown ids are absent."""
        return self._recent_or_stored(ids, 0, queries.completion_lengths)

    def completion_owners(self, ids: list[str]) -> dict[str, str | None]:
        """user_id of the known ids (queued or stored); unknown ids are absent."""
        return self._recent_or_stored(ids, 2, queries.completion_owners)

    def _recent_or_stored(self, ids: list[str], field: int, query) -> dict:
        with self._lock:
            found = {i: self._recent[i][field] for i in ids if i in self._recent}
        missing = [i for i in ids if i not in found]
        if missing:
            cursor = self.reader()
            try:
                found.update(query(cursor, missing))
            finally:
                cursor.close()
        return found

    def status(self) -> dict[str, Any]:
        running = self._thread is not None and self._thread.is_alive() and not self._queue.closing
        with self._lock:
            return {
                "queued_completions": self._queue.completions,
                "queued_events": self._queue.events,
                "written_completions": self._written_completions,
                "written_events": self._written_events,
                "dropped_completions": self._dropped_completions,
                "last_error": self._last_error,
                "last_error_at": self._last_error_at,
                "healthy": running and self._healthy,
            }

    # --- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.0
        while True:
            if self._con is None and not self._queue.closing:
                ok = self._reconnect()  # a fatal error dropped it: readers wait for this
            elif (batch := self._queue.take()) is None:
                break
            else:
                try:
                    ok = self._run_call(batch[0]) if isinstance(batch[0], CallItem) else self._write(batch)
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
        self.journal.close()  # rows given up at close stay in it, for the next start

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._set_connection(reopen_db(self.db_path))  # after a fatal error
        assert self._con is not None
        return self._con

    def _reconnect(self) -> bool:
        try:
            self._connection()
        except Exception as exc:  # still failing (the disk still full): back off, try again
            self._failed(exc, [])
            return False
        log.warning("telemetry database reopened after: %s", self._last_error)
        if self._queue.completions + self._queue.events == 0:
            with self._lock:  # rows still queued decide it with their own write, at once
                self._healthy = True
        return True

    def _write(self, batch: list[Item]) -> bool:
        completions = [i for i in batch if isinstance(i, dict)]
        requests = [i for i in batch if isinstance(i, EventsItem)]
        try:
            ctable = completions_table(completions) if completions else None
            etable = events_table([r.rows for r in requests]) if requests else None
        except Exception as exc:  # rows were validated; if one still fails, retrying cannot help
            log.exception("telemetry writer: dropping %d unconvertible items", len(batch))
            self._failed(exc, requests)
            self._queue.done(batch)
            self.journal.settled(len(completions))
            return True
        ats = [row["at"] for r in requests for row in r.rows]
        ids = {row["completion_id"] for r in requests for row in r.rows}
        with self._lock:
            created = {i: self._recent[i][1] for i in ids if i in self._recent}
        durable = False
        try:
            con = self._connection()
            con.execute("BEGIN")
            inserted = insert_completions(con, ctable) if ctable is not None else 0
            counts = insert_events(con, etable, ats, len(requests), created) if etable is not None else []
            con.execute("COMMIT")
        except Exception as exc:
            # DuckDB says so when the commit reached the WAL and only the automatic
            # checkpoint after it failed: the rows are durable, do not fail them.
            durable = _fatal(exc) and "COMMIT succeeded" in str(exc)
            if not durable:
                self._rollback()
            self._failed(exc, [] if durable else requests, durable=durable)
            if _fatal(exc):
                self._drop_connection()
            if not durable:
                return False
        self._queue.done(batch)
        self.journal.settled(len(completions))
        with self._lock:
            self._written_completions += inserted
            self._written_events += sum(counts)
            self._healthy = not durable  # healthy again once a reconnect works
        for request, count in zip(requests, counts):
            # done() already: the HTTP request that waited for it was cancelled (the client left).
            if request.future is not None and not request.future.done():
                request.future.set_result(count)
        return True

    def _run_call(self, call: CallItem) -> bool:
        if not call.future.set_running_or_notify_cancel():  # the caller gave up waiting
            self._queue.done([call])
            return True
        try:
            con = self._connection()
            if call.transaction:
                con.execute("BEGIN")
            result = call.fn(con)
            if call.transaction:
                con.execute("COMMIT")
        except Exception as exc:
            self._rollback()
            if _fatal(exc):
                self._failed(exc, [])
                self._drop_connection()
            call.future.set_exception(exc)
        else:
            call.future.set_result(result)
        self._queue.done([call])
        return True  # admin calls are not retried: the caller sees the error

    def _rollback(self) -> None:
        try:
            if self._con is not None:
                self._con.abort()  # a half-read result would make DuckDB refuse the ROLLBACK
                self._con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # no transaction open, or the connection is already unusable

    def _failed(self, exc: BaseException, requests: list[EventsItem], *, durable: bool = False) -> None:
        message = self._describe(exc)
        futures = [r.future for r in requests if r.future is not None]
        for request in requests:
            request.future = None  # told now; the rows stay queued and are retried
        with self._lock:
            self._last_error, self._last_error_at, self._healthy = message, utcnow().isoformat(), False
        if durable:
            log.warning("telemetry committed, but DuckDB invalidated the database; reconnecting: %s", message)
        else:
            log.warning("telemetry write failed (rows kept, will retry): %s", message)
        error = TelemetryWriteError(f"telemetry write failed, events not stored: {message}")
        for future in futures:
            if not future.done():  # a cancelled waiter needs no answer
                future.set_exception(error)

    def _describe(self, exc: BaseException) -> str:
        """DuckDB's message, led by what an operator should do about it when we know."""
        message = f"{type(exc).__name__}: {exc}"
        if "No space left on device" in message or "File too large" in message:
            return (f"disk full: no room for the telemetry database in {self.db_path.parent}; free space there "
                    f"(rows are kept in memory and retried meanwhile). {message}")
        if "Read-only file system" in message or "Permission denied" in message:
            return f"cannot write the telemetry database in {self.db_path.parent}. {message}"
        return message

    def _abandon(self, reason: str) -> None:
        items, lost = self._queue.drain()
        if lost:
            log.error("%s; %d telemetry rows lost", reason, lost)
        for item in items:
            future = None if isinstance(item, dict) else item.future
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
                con.close()
            except duckdb.Error as exc:
                log.warning("closing the telemetry database: %s", exc)
