"""When commits fail the writer keeps the rows, fails the pending futures, reports unhealthy,
and resumes once writes succeed again.

Two ways of making commits fail, both real DuckDB errors rather than a hook in the code:
- in process: another connection renames the `events` table away (a Catalog Error on every
  write until it is renamed back);
- in a subprocess: RLIMIT_FSIZE caps file sizes, so DuckDB's writes fail with "File too
  large" (EFBIG), the nearest thing to a full disk that needs no root; raising the limit
  again is the disk being freed.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from feedback.writer import TelemetryWriteError, TelemetryWriter

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 5, 4, 9, 0, 0)


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_failed_commits_fail_futures_keep_rows_and_recover(writer: TelemetryWriter) -> None:
    writer.add_completion({"id": "c1", "created_at": T0, "text": "abc"})
    writer.flush(5)
    saboteur = writer.reader()
    saboteur.execute("ALTER TABLE events RENAME TO events_away")

    events = [{"completion_id": "c1", "kind": "shown", "at": T0 + timedelta(seconds=1)}]
    with pytest.raises(TelemetryWriteError, match="events not stored.*events"):
        writer.add_events(events).result(5)
    writer.add_completion({"id": "c2", "created_at": T0, "text": "queued meanwhile"})
    status = writer.status()
    assert status["healthy"] is False
    assert "Catalog" in status["last_error"] and status["last_error_at"]
    assert status["queued_events"] == 1 and status["queued_completions"] == 1  # kept, retried

    saboteur.execute("ALTER TABLE events_away RENAME TO events")  # the "disk" is back
    wait_for(lambda: writer.status()["healthy"])
    writer.flush(5)
    status = writer.status()
    assert (status["queued_events"], status["written_events"], status["written_completions"]) == (0, 1, 2)
    # The client saw a failure and retries: the row is already there, nothing doubles.
    assert writer.add_events(events).result(5) == 0
    with closing(writer.reader()) as cursor:
        assert cursor.execute("SELECT count(*) FROM events").fetchall() == [(1,)]
        assert cursor.execute("SELECT shown_event FROM completion_outcomes WHERE completion_id = 'c1'").fetchall() == [(True,)]


def test_close_gives_up_after_its_timeout_when_writes_keep_failing(db_path: Path) -> None:
    writer = TelemetryWriter(db_path, flush_interval_s=0, retry_max_s=0.05).start()
    writer.add_completion({"id": "c1", "created_at": T0})
    writer.flush(5)
    with closing(writer.reader()) as saboteur:
        saboteur.execute("ALTER TABLE events RENAME TO events_away")
    first = writer.add_events([{"completion_id": "c1", "kind": "shown", "at": T0}])
    wait_for(lambda: not writer.status()["healthy"])
    second = writer.add_events([{"completion_id": "c1", "kind": "accepted", "at": T0}])
    started = time.monotonic()
    writer.close(timeout=0.3)
    assert time.monotonic() - started < 3
    for future in (first, second):
        with pytest.raises(TelemetryWriteError):
            future.result(0)


_IO_FAILURE = textwrap.dedent(
    """
    import json, os, resource, signal, sys, time
    from datetime import datetime, timedelta
    sys.path.insert(0, sys.argv[2])
    from feedback.writer import TelemetryWriter, TelemetryWriteError

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    path, t0, out, N = sys.argv[1], datetime(2026, 5, 4), {}, int(sys.argv[4])
    writer = TelemetryWriter(path, flush_interval_s=0, retry_max_s=0.05).start()
    for i in range(200):
        writer.add_completion({"id": f"c{i}", "created_at": t0, "text": "x" * 40})
    writer.flush(10)
    writer.execute(lambda con: con.execute("CHECKPOINT")).result(10)

    def events(i):
        return [{"completion_id": f"c{j % 200}", "kind": "shown", "at": t0 + timedelta(seconds=i, microseconds=j)}
                for j in range(N)]

    if sys.argv[3] == "checkpoint":  # the WAL append fits, the checkpoint after it does not
        writer.execute(lambda con: con.execute("SET checkpoint_threshold = '1KB'")).result(10)
        margin = 16 * 1024
    else:  # the WAL append itself fails
        margin = 64 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + margin, hard))  # the disk is full
    failures = 0
    for i in range(20):
        try:
            writer.add_events(events(i)).result(10)
        except TelemetryWriteError as exc:
            failures += 1
            out["error"] = str(exc)
    out["failures"] = failures
    out["during"] = writer.status()

    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space is freed
    deadline = time.time() + 20
    while not writer.status()["healthy"] and time.time() < deadline:
        time.sleep(0.05)
    writer.flush(20)
    out["retried_new"] = sum(writer.add_events(events(i)).result(10) for i in range(20))  # clients retry
    out["after"] = writer.status()
    writer.close()
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("where, per_call", [("wal", 2000), ("checkpoint", 300)])
def test_a_real_io_error_fails_futures_and_the_writer_resumes(db_path: Path, where: str, per_call: int) -> None:
    """`wal`: the commit's log write fails (rolled back, retried). `checkpoint`: the commit is
    durable but DuckDB's automatic checkpoint fails and invalidates the database ("FATAL"):
    the writer must not fail those events, and must reconnect once space is back."""
    result = subprocess.run(
        [sys.executable, "-c", _IO_FAILURE, str(db_path), str(REPO), where, str(per_call)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "File too large" in out["during"]["last_error"], out
    if where == "wal":
        assert out["failures"] >= 1 and "File too large" in out["error"], out
        assert out["during"]["healthy"] is False
    else:  # durable: no event failed; the writer reconnected (replaying the WAL) and went on
        assert out["failures"] == 0 and "COMMIT succeeded" in out["during"]["last_error"], out
    after = out["after"]
    assert after["healthy"] is True and after["queued_events"] == 0, after
    # Every distinct event is stored exactly once: kept rows were written on recovery, the
    # clients' retries of failed calls added nothing twice.
    assert after["written_events"] == 20 * per_call
    con = duckdb.connect(str(db_path), read_only=True)
    stored = con.execute('SELECT count(*), count(DISTINCT (completion_id, kind, "at")) FROM events').fetchall()
    assert stored == [(20 * per_call, 20 * per_call)]
    assert con.execute("SELECT count(*) FROM completion_outcomes WHERE shown_event").fetchall() == [(200,)]
    con.close()
