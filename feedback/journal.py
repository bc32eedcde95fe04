"""The completion journal: completion rows on disk before the answer leaves the server.

The writer batches rows in memory (a completion request never waits on the database), so a
kill -9 used to lose the rows of completions answered in the last ~50 ms, or all of those
queued while the disk was full; the editor's events for them were then refused ("unknown
completion_id") and lost with them. Each row is now appended to this file first (one
unbuffered write: it survives the process being killed; fsync is left out, a machine crash
is not the case here), and the file is emptied whenever every row in it has been committed.
On start-up the writer commits what the file still holds (duplicates are ignored by id).

The rows are the normalized ones (secrets scrubbed; no code when store_code is off), so the
file holds nothing the database would not.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from .rows import COMPLETION_COLUMNS, _check

log = logging.getLogger("codeloop.feedback")


def journal_path(db_path: Path) -> Path:
    """Beside the database: telemetry.duckdb -> telemetry.duckdb.journal."""
    return db_path.with_name(db_path.name + ".journal")


class CompletionJournal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pending = 0  # rows appended and not yet committed
        self._fd: int | None = None
        self._failed = False  # said once: a journal that cannot be written is a warning, not an outage

    def open(self) -> list[dict[str, Any]]:
        """Open for appending; the rows a previous process left (to be committed before any new one)."""
        leftover = self.read()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._pending = len(leftover)
        return leftover

    def read(self) -> list[dict[str, Any]]:
        """The rows in the file; a line cut short by a kill is skipped (its completion was never answered)."""
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_bytes().split(b"\n"):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                rows.append({name: _check(kind, raw.get(name), name) for name, kind in COMPLETION_COLUMNS.items()})
            except (ValueError, AttributeError) as exc:
                log.warning("completion journal %s: skipping an unreadable line (%s)", self.path, exc)
        return rows

    def append(self, row: dict[str, Any]) -> None:
        line = _line(row)
        with self._lock:
            if self._fd is None:
                return
            try:
                os.write(self._fd, line)
            except OSError as exc:  # disk full: the row is still queued, only not journaled
                if not self._failed:
                    log.warning("completion journal %s: cannot write (%s); completions answered now "
                                "are not kept through a kill until it can", self.path, exc)
                self._failed = True
                return
            self._failed = False
            self._pending += 1

    def settled(self, count: int) -> None:
        """`count` journaled rows are in the database (or were given up: the queue was full);
        once none is left, the file is emptied."""
        with self._lock:
            self._pending = max(0, self._pending - count)
            if self._pending == 0 and self._fd is not None:
                try:
                    os.ftruncate(self._fd, 0)
                except OSError as exc:
                    log.warning("completion journal %s: cannot empty it (%s)", self.path, exc)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def drop_user(path: Path, user: str) -> int:
    """Remove a user's rows from a journal no process holds (`codeloop forget` with no server
    running: else the next start would write them back); how many were removed."""
    journal = CompletionJournal(path)
    rows = journal.read()
    keep = [row for row in rows if row.get("user_id") != user]
    if len(keep) == len(rows):
        return 0
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for row in keep:
            os.write(fd, _line(row))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return len(rows) - len(keep)


def _line(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, default=_encode, separators=(",", ":")) + "\n").encode()


def _encode(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot journal {type(value).__name__}")
