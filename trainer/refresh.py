"""`codeloop refresh`: run the loop when enough new data has arrived, never twice at once.

State (data_dir/trainer/refresh.json) records each repository's HEAD and the time of the
last telemetry seen by the last successful run; it is written only after a run succeeds,
so a run that crashes is simply tried again next time, and the live adapter and the
registry are untouched until the very end of a run (trainer/publish.py).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

from feedback.rows import to_utc, utcnow
from trainer.config import RefreshConfig


class RefreshBusy(Exception):
    """Another refresh holds the lock."""


@dataclass
class NewData:
    commits: int
    accepted: int

    def enough(self, config: RefreshConfig) -> bool:
        return self.commits >= config.min_new_commits or self.accepted >= config.min_new_accepted


@contextmanager
def refresh_lock(state_dir: Path) -> Iterator[None]:
    """An exclusive, non-blocking lock held for the whole run (released if the process dies)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fh = open(state_dir / "refresh.lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "?"
        fh.close()
        raise RefreshBusy(f"another refresh is running (pid {holder}); nothing done") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    try:
        yield
    finally:
        fh.close()


def load_state(state_dir: Path) -> dict:
    path = state_dir / "refresh.json"
    return json.loads(path.read_text()) if path.is_file() else {"repos": {}, "telemetry_until": None}


def save_state(state_dir: Path, state: dict) -> None:
    tmp = state_dir / "refresh.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(state_dir / "refresh.json")


def head(repo: Path) -> str:
    return _git(repo, "rev-parse", "HEAD")


def new_commits(repo: Path, since_sha: str | None) -> int:
    """Commits on HEAD after `since_sha` (all of them when it is unknown or was rewritten)."""
    if since_sha:
        try:
            return int(_git(repo, "rev-list", "--count", f"{since_sha}..HEAD"))
        except RuntimeError:
            pass  # history rewritten: count everything
    return int(_git(repo, "rev-list", "--count", "HEAD"))


def count_accepted(parquet: Path) -> tuple[int, str | None]:
    """(accepted suggestions with code in an export, the newest created_at as ISO)."""
    import pyarrow.parquet as pq

    if not parquet.is_file() or parquet.stat().st_size == 0:
        return 0, None
    rows = pq.read_table(str(parquet), columns=["created_at", "accepted", "partial", "text"]).to_pylist()
    accepted = [r for r in rows if (r["accepted"] or r["partial"]) and r["text"] is not None]
    newest = max((r["created_at"] for r in rows), default=None)
    return len(accepted), newest.isoformat() if newest else None


def parse_every(text: str) -> float:
    """'24h', '30m', '90s', '1d' -> seconds; a clear error otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not match:
        raise ValueError(f"--every {text!r}: give a number and a unit, such as 30m, 24h or 7d")
    seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if seconds < 1:
        raise ValueError(f"--every {text!r} is too short")
    return seconds


def utc_from_iso(value: str | None) -> datetime | None:
    return to_utc(value, "telemetry_until") if value else None


def now_iso() -> str:
    return utcnow().isoformat()


def sleep_until(deadline: float) -> None:
    while (left := deadline - time.time()) > 0:
        time.sleep(min(left, 60))


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo}: {done.stderr.strip()}")
    return done.stdout.strip()
