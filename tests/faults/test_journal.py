"""Completions answered but not yet written when the server is killed -9: their rows come back
from the journal at the next start, so the editor's events for them are stored, not refused.

Before the journal, such events got 422 "unknown completion_id" and were set aside: silent loss.
The server here batches rows for 10 minutes (telemetry_batch_ms), so the kill surely lands
before any completion row was written.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import duckdb
import httpx

from feedback.journal import drop_user, journal_path
from feedback.writer import TelemetryWriter
from tests.conftest import start_server
from tests.faults.conftest import check_database, complete, event_key, shown_events, stored_events


def test_events_for_completions_answered_before_a_kill_9_are_stored_with_their_completion(model_dir, tmp_path):
    data = tmp_path / "data"
    db = data / "telemetry.duckdb"
    server = start_server(model_dir, data, env={"CODELOOP_TELEMETRY_BATCH_MS": "600000"})
    port = int(server.url.rsplit(":", 1)[1])
    try:
        with httpx.Client(base_url=server.url) as client:
            ids = [complete(client, i, user="u-journal").json()["id"] for i in range(3)]
        assert len(journal_path(db).read_text().splitlines()) == 3  # on disk before the answers left
        server.stop(signal.SIGKILL)
        assert server.proc.returncode == -signal.SIGKILL
        with duckdb.connect(str(db), read_only=True) as con:  # nothing of them was written
            assert con.execute("SELECT count(*) FROM completions").fetchone()[0] == 0

        server = start_server(model_dir, data, port=port)
        # What the language server's spool sends again once the server answers.
        events = shown_events(ids, start=0, n=3) + [
            {"completion_id": ids[0], "kind": "accepted", "at": "2026-01-01T00:00:01Z"}]
        with httpx.Client(base_url=server.url) as client:
            r = client.post("/v1/events", json=events, timeout=120)
            assert r.status_code == 200 and r.json()["stored"] == len(events), r.text
    finally:
        server.stop()

    assert {event_key(e) for e in events} <= set(stored_events(db))
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT id, user_id, text_chars FROM completions ORDER BY id").fetchall()
    assert sorted(i for i, *_ in rows) == sorted(ids)
    assert all(user == "u-journal" and chars is not None for _, user, chars in rows)
    checked = check_database(db)
    assert checked["orphan_events"] == 0 and checked["outcome_rows_missing"] == 0, checked
    assert journal_path(db).read_text() == ""  # emptied once its rows were committed


WRITER = textwrap.dedent("""
    import sys, time
    from feedback.writer import TelemetryWriter
    writer = TelemetryWriter(sys.argv[1], flush_interval_s=3600).start()
    for i in range(5):
        writer.add_completion({"id": f"c{i}", "user_id": "u-gone" if i < 2 else "u-kept", "text": "return x",
                               "prefix": "def f(x):\\n    "})
    print("queued", flush=True)
    time.sleep(600)
""")


def test_a_killed_writer_leaves_its_rows_to_the_next_one_and_forget_reaches_them(tmp_path):
    db = tmp_path / "telemetry.duckdb"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "queued"
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL

    # `codeloop forget` with no server running takes the user's rows out of the journal too.
    assert drop_user(journal_path(db), "u-gone") == 2
    with TelemetryWriter(db, flush_interval_s=0) as writer:
        assert writer.add_events([{"completion_id": "c4", "kind": "shown", "at": "2026-01-01T00:00:00Z"}]).result(30) == 1
        with writer.reader() as cursor:
            rows = cursor.execute("SELECT id, user_id, text FROM completions ORDER BY id").fetchall()
    assert rows == [(f"c{i}", "u-kept", "return x") for i in (2, 3, 4)]
    assert journal_path(db).read_text() == ""
