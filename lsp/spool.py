"""The event spool: every telemetry event is on disk before anything tries to send it.

Each language-server process appends to its own file (`events-<start>-<pid>.jsonl`, held
with an exclusive flock while it runs), one JSON object per line, fsynced per append. A
sidecar `<file>.sent` holds how many bytes have been delivered. Sending reads from there,
in order; after the server has acknowledged a batch (it answers only once the batch is
committed) the sidecar moves forward.

Delivery is at least once: a crash between the server's commit and the sidecar's update
sends that batch again. The server is idempotent by (completion_id, kind, at) and every
event carries the `at` stamped when it happened, so DuckDB still holds each event once.

Files left by a process that died (their lock is free) are adopted and replayed first,
oldest first, then deleted.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
COMPACT_BYTES = 1 << 20  # truncate our own file once it is all delivered and this big


@dataclass
class Pending:
    """A run of unsent events from one spool file; `end` is the byte offset after them."""

    path: Path
    end: int
    events: list[dict]


class EventSpool:
    def __init__(self, folder: Path, max_bytes: int = 64 << 20) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.dropped = 0  # events refused because the spool is full
        self._lock = threading.Lock()
        self.path = self.folder / f"events-{time.time_ns()}-{os.getpid()}.jsonl"
        self._file = open(self.path, "ab")
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._adopted: dict[Path, object] = {}  # orphan files we hold the lock of

    # --- writing -----------------------------------------------------------------------
    def append(self, event: dict) -> bool:
        """Write one event durably; False (and counted) when the spool is full."""
        line = (json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        with self._lock:
            if self._file.tell() + len(line) > self.max_bytes:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.error("event spool %s is full (%d bytes); %d events dropped", self.path, self.max_bytes, self.dropped)
                return False
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        return True

    # --- reading and acknowledging -------------------------------------------------------
    def pending(self, limit: int) -> Pending | None:
        """The oldest unsent events (at most `limit`, all from one file), or None."""
        for path in self._files():
            if path != self.path and not self._adopt(path):
                continue  # another live language server owns it
            batch = self._read(path, limit)
            if batch is not None:
                return batch
            if path != self.path:
                self._finish_orphan(path)
        return None

    def acknowledge(self, batch: Pending) -> None:
        """The server has stored `batch`: move the file's sent mark past it."""
        with self._lock:
            _write_mark(batch.path, batch.end)
            if batch.path == self.path and batch.end >= COMPACT_BYTES and batch.end == self._file.tell():
                # Everything delivered: start the file again. The mark goes first, so a crash
                # in between only re-sends (harmless), never skips.
                _write_mark(self.path, 0)
                self._file.truncate(0)
                self._file.seek(0)

    def unsent_count(self) -> int:
        total = 0
        for path in self._files():
            if path == self.path or self._adopt(path):
                start = _read_mark(path)
                with open(path, "rb") as f:
                    f.seek(start)
                    total += f.read().count(b"\n")
        return total

    def close(self) -> None:
        with self._lock:
            for handle in self._adopted.values():
                handle.close()
            self._adopted.clear()
            self._file.close()

    # --- internals -------------------------------------------------------------------------
    def _files(self) -> list[Path]:
        # Names start with the creating process's start time: sorting replays oldest first.
        return sorted(self.folder.glob("events-*.jsonl"))

    def _adopt(self, path: Path) -> bool:
        if path in self._adopted:
            return True
        try:
            handle = open(path, "ab")
        except OSError:
            return False
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        log.info("replaying events left by an earlier language server: %s", path.name)
        self._adopted[path] = handle
        return True

    def _read(self, path: Path, limit: int) -> Pending | None:
        start = _read_mark(path)
        events, end = [], start
        with open(path, "rb") as f:
            f.seek(start)
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # a line torn by a crash mid-write: it was never acknowledged to anyone
                end += len(raw)
                try:
                    events.append(json.loads(raw))
                except ValueError:
                    log.error("skipping an unreadable line in %s at byte %d", path, end - len(raw))
                    continue
                if len(events) >= limit:
                    break
        if end == start:
            return None
        return Pending(path, end, events)

    def _finish_orphan(self, path: Path) -> None:
        handle = self._adopted.pop(path, None)
        path.unlink(missing_ok=True)
        _mark_path(path).unlink(missing_ok=True)
        if handle is not None:
            handle.close()


def _mark_path(path: Path) -> Path:
    return path.with_name(path.name + ".sent")


def _read_mark(path: Path) -> int:
    try:
        return int(_mark_path(path).read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write_mark(path: Path, offset: int) -> None:
    mark = _mark_path(path)
    tmp = mark.with_name(mark.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(str(offset))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, mark)
