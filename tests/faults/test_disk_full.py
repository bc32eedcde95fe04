"""A full disk under the telemetry database, with the real server and with the writer alone.

The data_dir is a small tmpfs filled with a filler file; deleting the filler is the
operator freeing space. What must hold meanwhile: completions are still served, events get
503 + Retry-After (never a 200 for something not on disk), /healthz and /metrics say why,
nothing already acknowledged is lost, and the writer resumes by itself.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import httpx

from tests.conftest import REPO, metric, start_server
from tests.faults.conftest import (
    check_database,
    complete,
    event_key,
    fill,
    health,
    shown_events,
    stored_events,
    wait_health,
)

BATCH = 200


def test_disk_full_under_the_server(model_dir, tmp_path, mounts):
    data = mounts("data", "16m")
    db = data / "telemetry.duckdb"
    # The server's log goes elsewhere: this test is about the database, and its failures
    # should be readable.
    server = start_server(model_dir, tmp_path / "logs", env={"CODELOOP_DATA_DIR": str(data)})
    acked: list[dict] = []
    refused: list[list[dict]] = []
    try:
        with httpx.Client(base_url=server.url) as client:
            ids = [complete(client, i).json()["id"] for i in range(3)]
            start = 0

            def post(n: int = BATCH) -> httpx.Response:
                nonlocal start
                batch = shown_events(ids, start, n)
                start += n
                r = client.post("/v1/events", json=batch, timeout=120)
                if r.status_code == 200:
                    assert r.json()["stored"] == n, r.text
                    acked.extend(batch)
                else:
                    refused.append(batch)
                return r

            assert post().status_code == 200
            # A little room left: some commits still fit, then one fails part-way through
            # its WAL write, which must not leave a torn log behind.
            filler = fill(data, leave=48 * 1024)
            for _ in range(40):
                r = post()
                if r.status_code != 200:
                    break
            assert r.status_code == 503, r.text
            assert r.headers.get("retry-after", "").isdigit()
            assert "disk full" in r.json()["error"] and "No space left on device" in r.json()["error"], r.text
            filled_after = len(acked)

            during = [complete(client, 100 + i) for i in range(2)]  # suggestions do not wait on the disk
            assert [c.status_code for c in during] == [200, 200], [c.text for c in during]
            ids += [c.json()["id"] for c in during]
            r = post(10)  # events for them are validated (known ids) but cannot be stored
            assert r.status_code == 503, r.text

            status = health(server.url)
            assert status["status"] == "degraded", status
            telemetry = status["telemetry"]
            assert telemetry["healthy"] is False and "No space left on device" in telemetry["last_error"], telemetry
            assert telemetry["queued_events"] >= 2 * 10 and telemetry["queued_completions"] >= 2, telemetry
            assert metric(server.url, "codeloop_telemetry_healthy") == 0
            assert metric(server.url, "codeloop_telemetry_queued", table="events") >= 10
            reads = client.get("/v1/metrics/acceptance", params={"by": "language"}, timeout=60)
            assert reads.status_code == 200, reads.text  # committed data stays readable

            filler.unlink()  # space is back: the writer gets there by itself
            wait_health(server.url, "ok", timeout=120)
            assert health(server.url)["telemetry"]["queued_events"] == 0
            assert post().status_code == 200
            for batch in refused:  # clients retry what got 503: already written from the queue
                r = client.post("/v1/events", json=batch, timeout=120)
                assert r.status_code == 200 and r.json()["stored"] == 0, r.text
                acked.extend(batch)

            # Full again, then SIGTERM: shutdown must not hang on a writer that cannot write.
            filler = fill(data)
            assert post(10).status_code == 503
        stopped = time.monotonic()
        code = server.stop(signal.SIGTERM, timeout=120)
        took = time.monotonic() - stopped
        # uvicorn re-raises the signal once shut down cleanly: -15, not a kill by stop()
        assert code == -signal.SIGTERM and took < 90, (code, took, server.log()[-3000:])
        assert "telemetry writer closed while writes were failing" in server.log()
        filler.unlink()
    finally:
        server.stop(signal.SIGKILL)

    rows = stored_events(db)
    assert [k for k, n in Counter(rows).items() if n > 1] == []
    missing = {event_key(e) for e in acked} - set(rows)
    assert not missing, f"{len(missing)} acknowledged events lost (of {len(acked)}; {filled_after} before the disk filled)"
    checked = check_database(db)
    assert checked["orphan_events"] == 0 and checked["outcome_rows_missing"] == 0, checked
    assert checked["completions"] == 5  # the two served while the disk was full too


_WRITER = textwrap.dedent(
    """
    # The writer alone, in its own process, on a nearly full tmpfs. A tiny checkpoint
    # threshold makes DuckDB checkpoint after each commit; the checkpoint cannot write the
    # database file, and DuckDB invalidates the instance (FATAL) although the commit is durable.
    import json, os, sys, time
    from contextlib import closing
    from datetime import datetime, timedelta
    sys.path.insert(0, sys.argv[3])
    from feedback.writer import TelemetryWriter, TelemetryWriteError
    path, filler_path = sys.argv[1], sys.argv[2]
    t0, out = datetime(2026, 5, 4), {"acked": [], "failed": []}
    writer = TelemetryWriter(path, flush_interval_s=0, retry_max_s=0.1).start()

    def post(i, n):
        events = [{"completion_id": f"c{j % 50}", "kind": "shown", "at": t0 + timedelta(seconds=i, microseconds=j)}
                  for j in range(n)]
        try:
            writer.add_events(events).result(30)
            out["acked"].append([i, n])
        except TelemetryWriteError:
            out["failed"].append([i, n])

    def wait_healthy():
        deadline = time.time() + 30
        while not writer.status()["healthy"] and time.time() < deadline:
            time.sleep(0.05)
        return writer.status()["healthy"]

    for i in range(50):
        writer.add_completion({"id": f"c{i}", "created_at": t0, "text": "x" * 40})
    writer.flush(30)
    writer.execute(lambda con: con.execute("CHECKPOINT")).result(30)
    writer.execute(lambda con: con.execute("SET checkpoint_threshold = '1KB'")).result(30)
    stat = os.statvfs(os.path.dirname(path))
    with open(filler_path, "wb") as f:  # full, but for a few WAL appends
        f.write(b"\\0" * (stat.f_bavail * stat.f_frsize - 160 * 1024))

    post(0, 20)  # durable, then the FATAL checkpoint; and nothing more is queued
    out["fatal"] = writer.status()["last_error"]
    out["healthy_without_writes"] = wait_healthy()  # the writer reopened the database by itself
    with closing(writer.reader()) as cursor:
        out["readable"] = cursor.execute("SELECT count(*) FROM events").fetchone()[0]

    for i in range(1, 40):  # the reopened instance has the default threshold: now the WAL fills
        post(i, 300)
        if out["failed"]:
            break
    out["full"] = writer.status()
    os.unlink(filler_path)  # space is freed
    out["recovered"] = wait_healthy()
    writer.flush(30)
    out["after"] = writer.status()
    print(json.dumps(out), flush=True)
    time.sleep(600)  # killed -9 here: the next process must find every acknowledged row
    """
)


def test_checkpoint_on_a_full_disk_invalidates_duckdb_and_the_writer_recovers(tmp_path, mounts):
    data = mounts("writer", "8m")
    db, filler = data / "telemetry.duckdb", data / "filler"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), str(filler), str(REPO)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            raise AssertionError(f"the writer process printed nothing: {proc.stderr.read()[-3000:]}")
        out = json.loads(line)
    finally:
        proc.kill()
        proc.wait()
    assert "COMMIT succeeded" in out["fatal"] and "disk full" in out["fatal"], out
    assert out["acked"][0] == [0, 20], out  # durable: not failed
    assert out["healthy_without_writes"] is True and out["readable"] == 20, out
    assert out["failed"] and "No space left on device" in out["full"]["last_error"], out
    assert out["full"]["healthy"] is False and out["full"]["queued_events"] == 300, out
    assert out["recovered"] is True and out["after"]["queued_events"] == 0, out

    rows = stored_events(db)  # the file of a process killed -9: the WAL is replayed
    assert len(rows) == len(set(rows))
    per_second = Counter(r[2].second for r in rows)
    for i, n in out["acked"] + out["failed"]:  # the failed batch was kept and written on recovery
        assert per_second[i] == n, f"batch {i}: {per_second[i]} of {n} stored"
    assert len(rows) == sum(n for _, n in out["acked"] + out["failed"])
    checked = check_database(db)
    assert checked["orphan_events"] == 0 and checked["outcome_rows_missing"] == 0, checked
