"""Privacy through the real server and CLI: secrets scrubbed before storage, code erased after
retention_days (counts kept), `DELETE /v1/users/{user}` and `codeloop forget`."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta

import duckdb
import httpx

from feedback.rows import utcnow
from feedback.writer import TelemetryWriter
from tests.conftest import metric, start_server

# Built from pieces so that secret scanners do not flag this file.
TOKEN = "ghp_" + "Zy9Xw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa"


def complete(server, user: str, prefix: str = "def add(a, b):\n", language: str = "python") -> dict:
    body = {"segments": {"prefix": prefix, "suffix": "", "language": language, "filepath": "x.py"}, "max_tokens": 4, "user": user}
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def logs(server, user: str, expected: int) -> list[dict]:
    """The user's rows, once `expected` of them are on disk (the writer batches)."""
    for _ in range(100):
        found = httpx.get(server.url + "/v1/logs", params={"user": user, "limit": 100}).json()["rows"]
        if len(found) >= expected:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{user}: {len(found)} rows recorded, expected {expected}")


def shown_and_accepted(server, cid: str, at: datetime) -> None:
    r = httpx.post(server.url + "/v1/events", json=[{"completion_id": cid, "kind": "shown", "at": at.isoformat()},
                                                    {"completion_id": cid, "kind": "accepted", "at": (at + timedelta(seconds=1)).isoformat()}])
    assert r.status_code == 200, r.text


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codeloop.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "CODELOOP_CONFIG": os.devnull, **(env or {})}, timeout=120)


def test_a_planted_token_is_stored_scrubbed_and_counted(server):
    user = f"u-{uuid.uuid4().hex[:8]}"
    before = metric(server.url, "codeloop_telemetry_secrets_scrubbed_total", kind="github_token")
    made = complete(server, user, prefix=f'API = "{TOKEN}"\ndef call(path):\n    ')
    (row,) = logs(server, user, 1)
    assert row["id"] == made["id"]
    assert row["prefix"] == 'API = "<SECRET:github_token>"\ndef call(path):\n    '
    assert row["prefix_chars"] == len(f'API = "{TOKEN}"\ndef call(path):\n    ')  # the client's length
    assert metric(server.url, "codeloop_telemetry_secrets_scrubbed_total", kind="github_token") == before + 1
    export = httpx.get(server.url + "/v1/feedback/export", timeout=60)
    assert export.status_code == 200 and TOKEN.encode() not in export.content


def test_forget_over_http_and_with_the_cli(server):
    user, other = f"u-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    made = [complete(server, user, prefix=f"x{i} = ") for i in range(2)]
    kept = complete(server, other)
    for m in [*made, kept]:
        shown_and_accepted(server, m["id"], utcnow())
    logs(server, user, 2)

    r = httpx.delete(f"{server.url}/v1/users/{user}")
    assert r.status_code == 200, r.text
    assert r.json() == {"user": user, "completions": 2, "events": 4}
    assert httpx.get(server.url + "/v1/logs", params={"user": user}).json()["rows"] == []
    assert len(logs(server, other, 1)) == 1
    again = httpx.delete(f"{server.url}/v1/users/{user}")
    assert again.status_code == 404 and "no telemetry recorded for user" in again.json()["error"]
    # A late event for a forgotten suggestion is refused, not stored as an orphan.
    late = httpx.post(server.url + "/v1/events", json={"completion_id": made[0]["id"], "kind": "shown"})
    assert late.status_code == 422 and "unknown completion_id" in late.json()["error"]

    done = cli("forget", "--user", other, "--server", server.url)
    assert done.returncode == 0, done.stderr
    assert "deleted 1 completions and 2 events" in done.stdout and other in done.stdout
    missing = cli("forget", "--user", other, "--server", server.url)
    assert missing.returncode == 1 and "nothing deleted" in missing.stderr
    bad = cli("forget", "--user", " padded ", "--server", server.url)
    assert bad.returncode == 2 and "pseudonym" in bad.stderr


def test_retention_erases_old_code_keeps_counts_and_forget_works_on_the_file(model_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    old_at = utcnow() - timedelta(days=40)
    # Rows from 40 days ago, written before the server starts (the server owns the file after).
    with TelemetryWriter(data / "telemetry.duckdb", flush_interval_s=0) as writer:
        for i in range(3):
            writer.add_completion({"id": f"cmpl-old{i}", "created_at": old_at, "user_id": "u-old", "language": "old",
                                   "prefix": f"def old_{i}(x):\n", "suffix": "\n", "text": "    return x"})
            writer.add_events([{"completion_id": f"cmpl-old{i}", "kind": "shown", "at": old_at},
                               {"completion_id": f"cmpl-old{i}", "kind": "accepted", "at": old_at + timedelta(seconds=1)}]).result(10)
    server = start_server(model_dir, data, env={"CODELOOP_RETENTION_DAYS": "30"})
    env = {"CODELOOP_DATA_DIR": str(data), "CODELOOP_PORT": "9"}  # no server on port 9: the CLI opens the file
    try:
        for _ in range(100):  # the job runs at start-up, in the background
            if metric(server.url, "codeloop_telemetry_code_expired_total") >= 3:
                break
            time.sleep(0.1)
        assert metric(server.url, "codeloop_telemetry_code_expired_total") == 3
        new = complete(server, "u-new")
        for row in logs(server, "u-old", 3):
            assert (row["prefix"], row["suffix"], row["text"]) == (None, None, None)
            assert row["prefix_chars"] == len("def old_0(x):\n") and row["text_chars"] == len("    return x")
            assert len(row["prefix_sha256"]) == 64 and row["outcome"] == "accepted"
        (fresh,) = logs(server, "u-new", 1)
        assert fresh["id"] == new["id"] and fresh["prefix"] == "def add(a, b):\n"
        old = [r for r in httpx.get(server.url + "/v1/metrics/acceptance", params={"by": "language"}).json()["rows"] if r["key"] == "old"]
        assert old and (old[0]["completions"], old[0]["shown"], old[0]["accepted"]) == (3, 3, 3)
        assert old[0]["accepted_chars"] == 3 * len("    return x")

        # While the server holds the file, a CLI sent elsewhere (no server on port 9; without
        # --server it would find this one in data_dir/server.json) cannot open it and says why.
        busy = cli("forget", "--user", "u-old", "--server", "http://127.0.0.1:9", env=env)
        assert busy.returncode == 2 and "in use by another process" in busy.stderr
    finally:
        server.stop()

    gone = cli("forget", "--user", "u-old", env=env)
    assert gone.returncode == 0, gone.stderr
    assert "deleted 3 completions and 6 events" in gone.stdout and "telemetry.duckdb" in gone.stdout
    con = duckdb.connect(str(data / "telemetry.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT user_id, count(*) FROM completions GROUP BY ALL").fetchall() == [("u-new", 1)]
        assert con.execute("SELECT count(*) FROM events WHERE completion_id LIKE 'cmpl-old%'").fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM completion_outcomes WHERE user_id = 'u-old'").fetchall() == [(0,)]
    finally:
        con.close()
