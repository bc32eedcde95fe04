"""Fault-test helpers: tmpfs mounts (full disks, read-only file systems), HTTP clients that
remember what the server acknowledged, and checks on the DuckDB file itself.

Mounting needs root (or CAP_SYS_ADMIN). Where it is not permitted the tests that need it are
skipped LOUDLY: a pytest warning names the reason, so a green run without them is visible.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import time
import warnings
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import duckdb
import httpx
import pytest

# One fixed instant far from "now", so that events made by different tests never collide and
# the de-duplication key (completion_id, kind, at) is fully under the test's control.
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


class MountSkipped(UserWarning):
    """A fault test could not mount what it needs and was skipped."""


def _skip_loudly(reason: str) -> None:
    warnings.warn(MountSkipped(f"FAULT TEST SKIPPED: {reason}"))
    pytest.skip(f"FAULT TEST SKIPPED: {reason}")


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A fresh tmpfs of `size` (e.g. "16m") at `path`; unmounted afterwards, even on failure
    (lazily if a process we started still holds a file there)."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        _skip_loudly("no mount/umount commands on this machine")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        _skip_loudly(f"mounting a tmpfs is not permitted here ({done.stderr.strip() or done.returncode}); "
                     "run as root or with CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        unmount(path)


def unmount(path: Path) -> None:
    for _ in range(20):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.25)  # a process we stopped may still be closing its files
    subprocess.run(["umount", "-l", str(path)], check=True)


def remount_read_only(path: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        _skip_loudly(f"remounting a tmpfs read-only is not permitted here ({done.stderr.strip()})")


def fill(directory: Path, leave: int = 0) -> Path:
    """Write a filler file until the file system has about `leave` bytes left (0: full to
    the last block). Deleting the file frees the space again."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to fail at close
        stat = os.statvfs(directory)
        want = max(0, stat.f_bavail * stat.f_frsize - leave)
        try:
            while want > 0:
                want -= f.write(b"\0" * min(want, 1 << 20))
            while leave == 0:  # and the last blocks
                f.write(b"\0" * 4096)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def free_bytes(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- clients ----------------------------------------------------------------------------
def complete(client: httpx.Client, i: int, **extra) -> httpx.Response:
    """A small completion request (4 tokens: the model is real, the CPU slow)."""
    body = {"segments": {"prefix": f"def f{i}(x):\n    return ", "suffix": "", "language": "python",
                         "filepath": f"faults/m{i}.py"}, "max_tokens": 4, **extra}
    return client.post("/v1/completions", json=body, timeout=300)


def shown_events(completion_ids: list[str], start: int, n: int) -> list[dict]:
    """`n` distinct events over the ids: 'shown' at T0 + start + k microseconds."""
    return [{"completion_id": completion_ids[k % len(completion_ids)], "kind": "shown",
             "at": (T0 + timedelta(microseconds=start + k)).isoformat()} for k in range(n)]


def event_key(event: dict) -> tuple[str, str, datetime]:
    at = datetime.fromisoformat(event["at"]).astimezone(timezone.utc).replace(tzinfo=None)
    return event["completion_id"], event["kind"], at


def health(url: str) -> dict:
    return httpx.get(url + "/healthz", timeout=30).json()


def wait_health(url: str, status: str, timeout: float = 120) -> dict:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = health(url)
        if last["status"] == status:
            return last
        time.sleep(0.3)
    raise AssertionError(f"/healthz never said {status!r} in {timeout}s; last: {last}")


# --- the database, opened directly once the server is stopped ---------------------------
def stored_events(db: Path) -> list[tuple[str, str, datetime]]:
    """Every (completion_id, kind, at) row of the events table (duplicates kept)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [tuple(r) for r in con.execute('SELECT completion_id, kind, "at" FROM events').fetchall()]
    finally:
        con.close()


def check_database(db: Path) -> dict:
    """Open the file read-write like the server does (WAL replayed, migrations checked),
    run DuckDB's own integrity pass over every table, and count the rows."""
    from feedback.db import open_db

    con = open_db(db)
    try:
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("completions", "events", "completion_outcomes")}
        con.execute("CHECKPOINT")  # rewrites the tables from what was read: fails on a bad block
        counts["orphan_events"] = con.execute(
            "SELECT count(*) FROM events WHERE completion_id NOT IN (SELECT id FROM completions)").fetchone()[0]
        counts["outcome_rows_missing"] = con.execute(
            "SELECT count(*) FROM completions WHERE id NOT IN (SELECT completion_id FROM completion_outcomes)").fetchone()[0]
        return counts
    finally:
        con.close()


@pytest.fixture
def mounts(tmp_path: Path):
    """`mounts(name, size)` -> a tmpfs under tmp_path; all unmounted at teardown."""
    made: list[Path] = []
    stack = []

    def mount(name: str, size: str) -> Path:
        cm = tmpfs(tmp_path / name, size)
        path = cm.__enter__()
        stack.append(cm)
        made.append(path)
        return path

    yield mount
    errors = []
    for cm in reversed(stack):
        try:
            cm.__exit__(None, None, None)
        except Exception as exc:  # keep unmounting the others
            errors.append(exc)
    if errors:
        raise errors[0]
