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
from typing import Callable, Iterator

from codeloop.api_client import ApiClient, ApiError
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


@dataclass
class RefreshOutcome:
    """What one refresh found and did (the CLI prints it)."""

    commits: int  # new on the repositories' HEADs since the last successful run
    accepted: int  # new accepted suggestions on the server since then
    telemetry_note: str | None = None  # why accepted suggestions could not be counted
    run_id: str | None = None  # the training run, when there was one (it finished: a failed one raises)

    @property
    def ran(self) -> bool:
        return self.run_id is not None


def refresh_once(state_dir: Path, repos: list[Path], api: ApiClient, need: RefreshConfig, *, force: bool,
                 train: Callable[[str], None], starting: Callable[[RefreshOutcome], None] = lambda o: None) -> RefreshOutcome:
    """Under the lock: count what is new since the last successful run, and when it is enough
    (or `force`), call `train(run_id)` and then save the state. Raises RefreshBusy when
    another refresh holds the lock, RuntimeError for a repository git cannot read; whatever
    `train` raises leaves the state as it was (the next refresh tries again)."""
    with refresh_lock(state_dir):
        state = load_state(state_dir)
        commits = sum(new_commits(r, state["repos"].get(str(r.resolve()))) for r in repos)
        heads = {str(r.resolve()): head(r) for r in repos}
        outcome = RefreshOutcome(commits, 0)
        newest = state.get("telemetry_until")
        try:
            if api.reachable():
                outcome.accepted, newest = _count_new_accepted(api, state_dir, newest)
        except ApiError as exc:
            outcome.telemetry_note = f"telemetry not counted: {exc}"
        if not force and not NewData(commits, outcome.accepted).enough(need):
            return outcome
        outcome.run_id = "refresh-" + datetime.now().strftime("%Y%m%d-%H%M%S")
        starting(outcome)
        train(outcome.run_id)
        save_state(state_dir, {"repos": heads, "telemetry_until": newest, "last_run": outcome.run_id, "finished_at": now_iso()})
        return outcome


def _count_new_accepted(api: ApiClient, state_dir: Path, since: str | None) -> tuple[int, str | None]:
    export = state_dir / "refresh-export.parquet"
    try:
        api.export(export, since=utc_from_iso(since))
        accepted, seen = count_accepted(export)
    finally:
        export.unlink(missing_ok=True)  # everyone's code, only needed for the count
    return accepted, seen or since


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
