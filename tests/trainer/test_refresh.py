"""trainer/refresh.py's refresh_once, on a real git repository (no server: accepted
suggestions count 0): the thresholds, the state saved only after a run, the lock."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from codeloop.api_client import ApiClient
from tests.conftest import free_port
from trainer import refresh as rf
from trainer.config import RefreshConfig


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def commit(repo: Path, n: int) -> None:
    for i in range(n):
        with open(repo / "a.py", "a") as fh:
            fh.write(f"x{i} = {i}\n")
        git(repo, "add", "a.py")
        git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", f"c{i}")


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    commit(path, 3)
    return path


@pytest.fixture
def api():
    with ApiClient(f"http://127.0.0.1:{free_port()}") as client:  # nobody listens there
        yield client


def test_thresholds_runs_and_state(repo, api, tmp_path):
    state_dir, need, runs = tmp_path / "trainer", RefreshConfig(min_new_commits=5, min_new_accepted=10), []
    waiting = rf.refresh_once(state_dir, [repo], api, need, force=False, train=runs.append)
    assert (waiting.commits, waiting.accepted, waiting.run_id, waiting.ran) == (3, 0, None, False) and runs == []
    assert not (state_dir / "refresh.json").exists()

    commit(repo, 2)
    started = []
    done = rf.refresh_once(state_dir, [repo], api, need, force=False, train=runs.append, starting=started.append)
    assert done.ran and done.commits == 5 and runs == [done.run_id] and started == [done]
    assert rf.load_state(state_dir)["last_run"] == done.run_id

    again = rf.refresh_once(state_dir, [repo], api, need, force=False, train=runs.append)
    assert again.commits == 0 and not again.ran and len(runs) == 1  # counted from the saved HEAD
    forced = rf.refresh_once(state_dir, [repo], api, need, force=True, train=runs.append)
    assert forced.ran and len(runs) == 2


def test_a_failed_run_leaves_the_state_as_it_was(repo, api, tmp_path):
    state_dir = tmp_path / "trainer"

    def crash(run_id: str) -> None:
        raise RuntimeError("training failed")

    with pytest.raises(RuntimeError, match="training failed"):
        rf.refresh_once(state_dir, [repo], api, RefreshConfig(), force=True, train=crash)
    assert not (state_dir / "refresh.json").exists()
    assert rf.refresh_once(state_dir, [repo], api, RefreshConfig(min_new_commits=3), force=False, train=lambda _: None).ran


def test_one_refresh_at_a_time(repo, api, tmp_path):
    state_dir = tmp_path / "trainer"
    with rf.refresh_lock(state_dir), pytest.raises(rf.RefreshBusy, match="another refresh is running"):
        rf.refresh_once(state_dir, [repo], api, RefreshConfig(), force=True, train=lambda _: None)


def test_a_folder_that_is_not_a_repository_is_an_error(api, tmp_path):
    with pytest.raises(RuntimeError):
        rf.refresh_once(tmp_path / "trainer", [tmp_path], api, RefreshConfig(), force=True, train=lambda _: None)
