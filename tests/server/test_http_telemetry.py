"""Telemetry through the real server: completions recorded, events validated and stored once,
metrics, logs and export; SIGTERM flushes; kill -9 loses nothing that was acknowledged."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import duckdb
import httpx
import pytest

from tests.conftest import start_server


def completion(server, language: str, prefix: str = "def add(a, b):\n    return", **extra) -> dict:
    body = {"segments": {"prefix": prefix, "suffix": "", "language": language, "filepath": "x.py"}, "max_tokens": 6, **extra}
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def events(server, payload, timeout=60) -> httpx.Response:
    return httpx.post(server.url + "/v1/events", json=payload, timeout=timeout)


def at(seconds: float = 0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def by_language(server, language: str) -> dict:
    """The language's row; completions reach the database within the writer's flush interval."""
    for _ in range(50):
        rows = httpx.get(server.url + "/v1/metrics/acceptance", params={"by": "language"}).json()["rows"]
        found = [r for r in rows if r["key"] == language]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no completions recorded for {language}")


def test_events_are_stored_once_and_counted(server):
    lang = f"lang-{uuid.uuid4().hex[:6]}"
    first, second = completion(server, lang), completion(server, lang, prefix="import os\n")
    length = len(first["choices"][0]["text"])
    stamp = at()
    batch = {"events": [
        {"completion_id": first["id"], "kind": "shown", "at": stamp},
        {"completion_id": first["id"], "kind": "accepted", "at": at(1), "elapsed_ms": 800},
        {"completion_id": first["id"], "kind": "retained", "at": at(30), "retained_ratio": 0.5, "age_s": 30},
        {"completion_id": second["id"], "kind": "shown", "at": stamp},
        {"completion_id": second["id"], "kind": "rejected", "at": at(2)},
    ]}
    r = events(server, batch)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 5, "stored": 5, "durable": True}
    again = events(server, batch)  # a client retrying after a lost answer
    assert again.json()["stored"] == 0
    single = events(server, {"completion_id": second["id"], "kind": "shown", "at": stamp})  # one event, not a batch
    assert single.json() == {"received": 1, "stored": 0, "durable": True}
    row = by_language(server, lang)
    assert (row["completions"], row["shown"], row["accepted"]) == (2, 2, 1)
    assert row["acceptance_rate"] == pytest.approx(0.5)
    assert row["accepted_chars"] == length
    assert row["accepted_chars_per_shown"] == pytest.approx(length / 2)
    assert row["retained_30s"] == pytest.approx(0.5) and row["retained_600s"] is None
    assert row["latency_p50_ms"] > 0

    def languages(adapter):
        rows = httpx.get(server.url + "/v1/metrics/acceptance", params={"by": "language", "adapter": adapter}).json()["rows"]
        return {r["key"]: r["shown"] for r in rows}

    assert languages("base")[lang] == 2  # these completions came from the base model
    assert lang not in languages("someone-else@1")

    logs = httpx.get(server.url + "/v1/logs", params={"limit": 50}).json()["rows"]
    outcomes = {r["id"]: r["outcome"] for r in logs}
    assert outcomes[first["id"]] == "accepted" and outcomes[second["id"]] == "rejected"


def test_an_accepted_event_for_part_of_the_suggestion_is_recorded_as_partial(server):
    """`accepted` with accepted_chars shorter than the suggestion is a partial accept, never all of it."""
    lang = f"lang-{uuid.uuid4().hex[:6]}"
    made = completion(server, lang)
    length = len(made["choices"][0]["text"])
    assert length > 2
    r = events(server, [{"completion_id": made["id"], "kind": "shown", "at": at()},
                        {"completion_id": made["id"], "kind": "accepted", "accepted_chars": 2, "at": at(1)}])
    assert r.status_code == 200, r.text
    row = next(r for r in httpx.get(server.url + "/v1/logs", params={"limit": 50}).json()["rows"] if r["id"] == made["id"])
    assert row["outcome"] == "partial" and row["accepted_chars"] == 2
    assert by_language(server, lang)["accepted_chars"] == 2


@pytest.mark.parametrize(
    "event, needle",
    [
        ({"completion_id": "cmpl-doesnotexist", "kind": "shown"}, "unknown completion_id"),
        ({"kind": "shown"}, "completion_id"),
        ({"completion_id": "{id}", "kind": "liked"}, "kind"),
        ({"completion_id": "{id}", "kind": "partial"}, "needs accepted_chars"),
        ({"completion_id": "{id}", "kind": "partial", "accepted_chars": 100000}, "longer than the suggestion"),
        ({"completion_id": "{id}", "kind": "retained", "retained_ratio": 1.5, "age_s": 30}, "retained_ratio"),
        ({"completion_id": "{id}", "kind": "retained", "retained_ratio": 0.5}, "age_s"),
        ({"completion_id": "{id}", "kind": "accepted", "at": "yesterday"}, "at"),
        ({"completion_id": "{id}", "kind": "shown", "colour": "red"}, "colour"),
    ],
)
def test_impossible_events_are_refused_and_nothing_of_the_batch_is_stored(server, event, needle):
    lang = f"lang-{uuid.uuid4().hex[:6]}"
    made = completion(server, lang)
    bad = {k: (v.format(id=made["id"]) if isinstance(v, str) else v) for k, v in event.items()}
    good = {"completion_id": made["id"], "kind": "shown", "at": at()}
    r = events(server, [good, bad])
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]
    assert by_language(server, lang)["shown"] == 0  # the good event of the batch was not stored either


def test_a_refused_batch_names_each_bad_event(server):
    good = {"completion_id": "cmpl-x", "kind": "shown"}
    for body in ({"events": [good, {**good, "kind": "liked"}, {"kind": "shown"}]}, [good, {**good, "kind": "liked"}, {"kind": "shown"}]):
        r = events(server, body)
        assert r.status_code == 422
        error = r.json()["error"]
        assert "events[1].kind: Input should be 'shown'" in error and "events[2].completion_id: Field required" in error
        assert "events[0]" not in error
    one = events(server, {"kind": "shown"})
    assert one.status_code == 422 and one.json()["error"] == "completion_id: Field required"


def test_batch_limits_and_shapes(server):
    assert events(server, []).status_code == 422
    too_many = [{"completion_id": "x", "kind": "shown"}] * 1001
    r = events(server, {"events": too_many})
    assert r.status_code == 422 and "1000" in r.json()["error"]
    r = httpx.post(server.url + "/v1/events", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_export_gives_parquet_of_completions_with_outcomes(server, tmp_path):
    lang = f"lang-{uuid.uuid4().hex[:6]}"
    made = completion(server, lang)
    events(server, [{"completion_id": made["id"], "kind": "shown", "at": at()},
                    {"completion_id": made["id"], "kind": "partial", "accepted_chars": 2, "at": at(1)}])
    r = httpx.get(server.url + "/v1/feedback/export", timeout=60)
    assert r.status_code == 200 and r.content[:4] == b"PAR1"
    out = tmp_path / "export.parquet"
    out.write_bytes(r.content)
    row = duckdb.sql(f"SELECT * FROM read_parquet('{out}') WHERE id = '{made['id']}'").fetchall()
    columns = [d[0] for d in duckdb.sql(f"SELECT * FROM read_parquet('{out}') LIMIT 0").description]
    assert len(row) == 1
    record = dict(zip(columns, row[0]))
    assert record["language"] == lang and record["prefix"] == "def add(a, b):\n    return"
    assert record["text"] == made["choices"][0]["text"]
    future = httpx.get(server.url + "/v1/feedback/export", params={"since": at(3600)}, timeout=60)
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{_write(tmp_path, future.content)}')").fetchall()[0][0] == 0


def _write(tmp_path, content: bytes):
    path = tmp_path / f"{uuid.uuid4().hex}.parquet"
    path.write_bytes(content)
    return path


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codeloop.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_sigterm_flushes_and_store_code_off_keeps_no_code(model_dir, tmp_path):
    """Completions made just before SIGTERM are all on disk; with store_code off, only lengths and hashes."""
    data = tmp_path / "data"
    server = start_server(model_dir, data, env={"CODELOOP_STORE_CODE": "false"})
    try:
        made = [completion(server, "python", prefix=f"def secret_{i}(x):\n") for i in range(3)]
        events(server, [{"completion_id": m["id"], "kind": "shown", "at": at()} for m in made]).raise_for_status()
        assert (data / "server.json").exists()  # where `codeloop stats` & co. find it
    finally:
        server.stop()
    assert not (data / "server.json").exists()  # removed on a clean exit
    con = duckdb.connect(str(data / "telemetry.duckdb"), read_only=True)
    rows = con.execute("SELECT id, prefix, suffix, text, prefix_chars, text_chars, prefix_sha256 FROM completions").fetchall()
    con.close()
    assert {r[0] for r in rows} == {m["id"] for m in made}
    for _, prefix, suffix, text, prefix_chars, text_chars, sha in rows:
        assert prefix is None and suffix is None and text is None
        assert prefix_chars == len("def secret_0(x):\n") and len(sha) == 64 and text_chars is not None

    # With the server stopped the CLI reads the file itself.
    env = {"CODELOOP_DATA_DIR": str(data), "CODELOOP_PORT": "9", "CODELOOP_CONFIG": os.devnull}
    stats = cli("stats", "--by", "language", env=env)
    assert stats.returncode == 0, stats.stderr
    assert "python" in stats.stdout and "100.0%" not in stats.stdout
    logs = cli("logs", "-n", "2", env=env)
    assert logs.returncode == 0 and logs.stdout.count("cmpl-") == 2
    exported = cli("export", str(tmp_path / "out.parquet"), env=env)
    assert exported.returncode == 0, exported.stderr
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{tmp_path / 'out.parquet'}')").fetchall()[0][0] == 3
    code = duckdb.sql(f"SELECT count(prefix) + count(suffix) + count(text) FROM read_parquet('{tmp_path / 'out.parquet'}')")
    assert code.fetchall()[0][0] == 0  # the export has no code either


def test_kill_9_loses_no_acknowledged_event(model_dir, tmp_path):
    data = tmp_path / "data"
    server = start_server(model_dir, data)
    acknowledged, sent = [], []
    made = [completion(server, "python", prefix=f"x{i} = ") for i in range(4)]
    for i, m in enumerate(made):
        batch = [{"completion_id": m["id"], "kind": "shown", "at": at(i)},
                 {"completion_id": m["id"], "kind": "accepted", "at": at(i + 0.5)}]
        r = events(server, batch)
        assert r.status_code == 200
        sent += batch
        acknowledged += [(e["completion_id"], e["kind"]) for e in batch]
    server.stop(signal.SIGKILL)
    assert server.proc.returncode == -signal.SIGKILL

    again = start_server(model_dir, data)  # the database must open cleanly
    try:
        health = httpx.get(again.url + "/healthz").json()
        assert health["telemetry"]["healthy"]
        # Re-sending after the crash (a client that never saw an answer) stores nothing twice.
        resent = events(again, sent)
        assert resent.status_code == 200 and resent.json()["stored"] == 0
    finally:
        again.stop()
    con = duckdb.connect(str(data / "telemetry.duckdb"), read_only=True)
    stored = con.execute("SELECT completion_id, kind FROM events").fetchall()
    con.close()
    assert sorted(stored) == sorted(set(stored))  # no duplicates
    assert set(acknowledged) <= set(stored)


def test_stats_and_logs_commands_talk_to_the_running_server(server):
    lang = f"lang-{uuid.uuid4().hex[:6]}"
    made = completion(server, lang)
    events(server, [{"completion_id": made["id"], "kind": "shown", "at": at()},
                    {"completion_id": made["id"], "kind": "accepted", "at": at(1)}]).raise_for_status()
    env = {"CODELOOP_CONFIG": os.devnull}
    stats = cli("stats", "--by", "language", "--server", server.url, env=env)
    assert stats.returncode == 0, stats.stderr
    (line,) = [ln for ln in stats.stdout.splitlines() if ln.startswith(lang)]
    assert "100.0%" in line  # one shown, one accepted
    logs = cli("logs", "-n", "50", "--server", server.url, env=env)
    assert made["id"] in logs.stdout and "accepted" in logs.stdout
    bad = cli("stats", "--by", "colour", env=env)
    assert bad.returncode == 2
