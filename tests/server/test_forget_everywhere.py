"""`codeloop forget` and `retention_days` reach every copy under data_dir: after a forget no
file there holds the user's pseudonym or a string planted in their code (the database
included: it is rewritten, not only deleted from), with the server running and without it.

The copies are made by the trainer's own code from the server's own export, as a training
run makes them; the export is also left where a killed run or `codeloop refresh` left it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from feedback.export import export_file
from feedback.rows import utcnow
from feedback.writer import TelemetryWriter
from tests.conftest import metric, start_server
from tests.feedback.test_copies import build_run, dataset_users, files_holding, record
from codeloop.api_client import ApiClient

pytestmark = pytest.mark.slow


def cli(data_dir: Path, *args: str, port: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CODELOOP_CONFIG": os.devnull, "CODELOOP_DATA_DIR": str(data_dir)}
    if port:
        env["CODELOOP_PORT"] = port
    return subprocess.run([sys.executable, "-m", "codeloop.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def complete_and_accept(server, user: str, prefix: str) -> None:
    body = {"segments": {"prefix": prefix, "suffix": "", "language": "python"}, "max_tokens": 2, "user": user}
    made = httpx.post(server.url + "/v1/completions", json=body, timeout=120).json()
    at = utcnow()
    events = [{"completion_id": made["id"], "kind": "shown", "at": at.isoformat()},
              {"completion_id": made["id"], "kind": "accepted", "at": (at + timedelta(seconds=1)).isoformat()}]
    assert httpx.post(server.url + "/v1/events", json=events, timeout=60).status_code == 200


def copies_of_export(data_dir: Path, export: Path) -> Path:
    """The run's dataset and leftover export, and `codeloop refresh`'s leftover export."""
    run = build_run(data_dir, export)
    (data_dir / "trainer").mkdir(exist_ok=True)
    (data_dir / "trainer" / "refresh-export.parquet").write_bytes(export.read_bytes())
    return run


def test_forget_through_the_server_leaves_nothing_of_the_user_under_data_dir(server, tmp_path):
    user, other = f"forget-{uuid.uuid4().hex[:8]}", f"keep-{uuid.uuid4().hex[:8]}"
    mark = f"planted_{uuid.uuid4().hex[:10]}"
    for i in range(2):
        complete_and_accept(server, user, f"def f{i}():\n    {mark}_{i} = 1\n    ")
    complete_and_accept(server, other, "def g():\n    ")
    for _ in range(100):  # the writer batches: until both users' rows are on disk
        rows = httpx.get(server.url + "/v1/logs", params={"limit": 1000}, timeout=30).json()["rows"]
        if {user, other} <= {r["user_id"] for r in rows}:
            break
        time.sleep(0.1)
    api = ApiClient(server.url)
    api.export(tmp_path / "export.parquet")
    api.close()
    run = copies_of_export(server.data_dir, tmp_path / "export.parquet")
    assert files_holding(server.data_dir / "runs", user, mark) and files_holding(server.data_dir / "trainer", user, mark)
    # Two rows in each export copy, and an example for each suggestion that was not empty.
    copied = 2 * 2 + dataset_users(run).count(user)

    done = cli(server.data_dir, "forget", "--user", user, "--server", server.url)
    assert done.returncode == 0, done.stderr
    assert "deleted 2 completions and 4 events" in done.stdout
    assert f"{copied} rows of training copies" in done.stdout
    assert files_holding(server.data_dir, user, mark) == []  # telemetry.duckdb included
    left = pq.read_table(run / "telemetry.parquet", columns=["user_id"])["user_id"].to_pylist()
    assert other in left and user not in left  # only their rows went
    assert httpx.get(server.url + "/healthz", timeout=30).json()["status"] == "ok"  # serving on after the rewrite
    again = httpx.delete(f"{server.url}/v1/users/{user}", timeout=60)
    assert again.status_code == 404


def test_forget_without_a_server_reaches_the_file_experiments_and_copies(tmp_path):
    data = tmp_path / "data"
    with TelemetryWriter(data / "telemetry.duckdb", flush_interval_s=0.0) as writer:
        record(writer, "u-forget", 2)
        record(writer, "u-keep", 1)
        add_experiment(writer, ["u-forget", "u-keep"])
    export_file(data / "telemetry.duckdb", tmp_path / "export.parquet")
    copies_of_export(data, tmp_path / "export.parquet")

    done = cli(data, "forget", "--user", "u-forget", port="9")  # nothing listens on port 9
    assert done.returncode == 0, done.stderr
    assert "deleted 2 completions and 4 events" in done.stdout and "telemetry.duckdb" in done.stdout
    assert "1 experiments' user lists and 6 rows" in done.stdout
    assert files_holding(data, "u-forget", "planted_u_forget") == []
    assert experiment_users(data) == ["u-keep"]


def add_experiment(writer: TelemetryWriter, users: list[str]) -> None:
    arms = json.dumps({"weights": {"base": 1, "team@1": 1}, "users": users})
    writer.execute(lambda con: con.execute(
        "INSERT INTO experiments VALUES ('exp-1', 'x', ?, 'base', 'running', now(), NULL, NULL, 0.05, '{}')", [arms])).result(10)


def experiment_users(data: Path) -> list[str]:
    import duckdb

    con = duckdb.connect(str(data / "telemetry.duckdb"), read_only=True)
    try:
        return json.loads(con.execute("SELECT arms FROM experiments").fetchone()[0])["users"]
    finally:
        con.close()


@pytest.fixture(scope="module")
def configured_server(model_dir, tmp_path_factory):
    """A server with retention_days = 30 over telemetry from 40 days ago, copied into a
    training run, and an experiment that lists users. It also has allowed_hosts set (one
    server start fewer for test_allowed_hosts_adds_names_and_their_pages, below)."""
    data = tmp_path_factory.mktemp("retention")
    old = utcnow() - timedelta(days=40)
    with TelemetryWriter(data / "telemetry.duckdb", flush_interval_s=0.0) as writer:
        record(writer, "u-old", 2, created_at=old)
        record(writer, "u-new", 1)
        add_experiment(writer, ["u-old", "u-new"])
    export_file(data / "telemetry.duckdb", data.parent / f"{data.name}-export.parquet")
    run = copies_of_export(data, data.parent / f"{data.name}-export.parquet")
    proc = start_server(model_dir, data, env={"CODELOOP_RETENTION_DAYS": "30",
                                              "CODELOOP_ALLOWED_HOSTS": '["codeloop.test", "*.corp.test"]'})
    yield proc, run
    proc.stop()


def test_retention_reaches_the_copies_and_the_file(configured_server):
    server, run = configured_server
    for _ in range(300):  # the job runs at start-up, in the background
        expired = metric(server.url, "codeloop_telemetry_code_expired_total") >= 2
        if expired and not files_holding(server.data_dir, "planted_u_old"):
            break
        time.sleep(0.1)
    assert files_holding(server.data_dir, "planted_u_old") == []
    assert dataset_users(run) == ["repo", "u-new"]


def test_forget_takes_the_user_off_a_running_experiment(configured_server):
    server, _ = configured_server
    r = httpx.delete(f"{server.url}/v1/users/u-old", timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["experiments"] == 1
    (exp,) = httpx.get(server.url + "/v1/experiments", timeout=30).json()["experiments"]
    assert exp["users"] == ["u-new"]
    assert files_holding(server.data_dir, "u-old") == []


def test_allowed_hosts_adds_names_and_their_pages(configured_server):
    """The setting end to end (tests/server/test_http_browser_guard.py has the checks)."""
    url = configured_server[0].url
    for host in ("codeloop.test", "CodeLoop.Test:443", "ci.corp.test"):
        assert httpx.get(url + "/healthz", headers={"Host": host}, timeout=30).status_code == 200, host
    for host in ("evil.test", "corp.test.evil.test", "codeloop.test.evil.test"):
        assert httpx.get(url + "/healthz", headers={"Host": host}, timeout=30).status_code == 400, host
    # Behind a proxy that rewrites Host, the proxied page's origin is one of these names.
    ok = httpx.post(url + "/v1/adapters/base/promote", headers={"Origin": "https://codeloop.test"}, timeout=30)
    assert ok.status_code == 200, ok.text
    refused = httpx.post(url + "/v1/adapters/base/promote", headers={"Origin": "https://evil.test"}, timeout=30)
    assert refused.status_code == 403
