"""TelemetryWriter: ordering, idempotency, durability on close, never blocking completions."""
from __future__ import annotations

import threading
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from feedback.writer import TelemetryWriteError, TelemetryWriter

T0 = datetime(2026, 5, 4, 9, 0, 0)


def completion(cid: str, **extra) -> dict:
    return {"id": cid, "created_at": T0, "adapter": "team-py@1", "language": "python", "text": "return x + 1", **extra}


def shown(cid: str, seconds: float = 1.0) -> dict:
    return {"completion_id": cid, "kind": "shown", "at": T0 + timedelta(seconds=seconds)}


def count(writer: TelemetryWriter, sql: str) -> int:
    with closing(writer.reader()) as cursor:
        return cursor.execute(sql).fetchall()[0][0]


def test_events_resolve_with_new_counts_only_once_committed(writer: TelemetryWriter) -> None:
    writer.add_completion(completion("c1"))
    future = writer.add_events([shown("c1"), {"completion_id": "c1", "kind": "accepted", "at": T0 + timedelta(seconds=2)}])
    assert future.result(5) == 2
    # resolved means committed: a fresh cursor sees the rows and the completion
    assert count(writer, "SELECT count(*) FROM events") == 2
    assert count(writer, "SELECT count(*) FROM completions WHERE id = 'c1'") == 1


def test_same_event_twice_is_stored_and_counted_once(writer: TelemetryWriter) -> None:
    writer.add_completion(completion("c1"))
    event = shown("c1")
    assert writer.add_events([event, dict(event)]).result(5) == 1  # twice in one call
    assert writer.add_events([event]).result(5) == 0  # again later (a client retry)
    # two calls that land in the same batch: the first one gets the row
    writer.execute(lambda con: time.sleep(0.2))  # holds the writer so both calls queue up
    again = shown("c1", 5.0)
    first, second = writer.add_events([again]), writer.add_events([again, shown("c1", 6.0)])
    assert (first.result(5), second.result(5)) == (1, 1)
    assert count(writer, "SELECT count(*) FROM events") == 3
    # aware timestamps are the same instant as naive UTC ones
    aware = {"completion_id": "c1", "kind": "shown", "at": (T0 + timedelta(seconds=1)).replace(tzinfo=timezone.utc)}
    assert writer.add_events([aware]).result(5) == 0
    assert writer.add_events([dict(aware, at=aware["at"].isoformat())]).result(5) == 0
    assert writer.status()["written_events"] == 3


def test_an_event_is_never_committed_before_its_completion(writer: TelemetryWriter) -> None:
    """Interleave completions and their events; whenever an event future resolves, the
    completion it refers to must already be readable."""
    missing: list[str] = []
    futures = []
    for i in range(300):
        writer.add_completion(completion(f"c{i}"))
        if i % 3 == 0:
            time.sleep(0.001)  # let batches split at arbitrary points
        futures.append((f"c{i}", writer.add_events([shown(f"c{i}")])))
    for cid, future in futures:
        assert future.result(5) == 1
        if count(writer, f"SELECT count(*) FROM completions WHERE id = '{cid}'") != 1:
            missing.append(cid)
    assert missing == []


def test_close_flushes_everything_and_is_idempotent(db_path: Path) -> None:
    writer = TelemetryWriter(db_path, flush_interval_s=10.0).start()  # would linger 10 s
    for i in range(2000):
        writer.add_completion(completion(f"c{i}"))
    future = writer.add_events([shown(f"c{i}") for i in range(2000)])
    started = time.monotonic()
    writer.close()
    writer.close()
    assert time.monotonic() - started < 5  # closing cuts the linger short
    assert future.result(0) == 2000
    with pytest.raises(RuntimeError, match="closed"):
        writer.add_completion(completion("late"))
    assert writer.status()["healthy"] is False
    con = duckdb.connect(str(db_path), read_only=True)  # and the data is on disk
    assert con.execute("SELECT (SELECT count(*) FROM completions), (SELECT count(*) FROM events)").fetchall() == [(2000, 2000)]
    con.close()


def test_add_completion_never_waits_for_the_database(writer: TelemetryWriter) -> None:
    release = threading.Event()
    busy = writer.execute(lambda con: release.wait(5))  # the writer thread is stuck in a write
    time.sleep(0.05)
    started = time.perf_counter()
    for i in range(500):
        writer.add_completion(completion(f"c{i}"))
    assert time.perf_counter() - started < 0.5
    assert writer.status()["queued_completions"] == 500
    # queued completions are already known to event validation
    assert writer.completion_lengths(["c0", "c499", "nope"]) == {"c0": 12, "c499": 12}
    release.set()
    busy.result(5)
    writer.flush(5)
    assert count(writer, "SELECT count(*) FROM completions") == 500


def test_store_code_off_keeps_lengths_and_hashes_only(db_path: Path) -> None:
    with TelemetryWriter(db_path, store_code=False, flush_interval_s=0) as writer:
        writer.add_completion(completion("c1", prefix="def f(x):\n    ", suffix="\n"))
        writer.flush(5)
        with closing(writer.reader()) as cursor:
            row = cursor.execute(
                "SELECT prefix, suffix, text, prefix_chars, suffix_chars, text_chars, prefix_sha256, text_sha256 FROM completions"
            ).fetchall()[0]
    assert row[:3] == (None, None, None)
    assert row[3:6] == (14, 1, 12)
    assert len(row[6]) == 64 and len(row[7]) == 64


def test_completion_lengths_falls_back_to_the_database(db_path: Path) -> None:
    with TelemetryWriter(db_path, flush_interval_s=0, remember=2) as writer:
        for i in range(5):
            writer.add_completion(completion(f"c{i}", text="x" * i))
        writer.flush(5)
        # c0..c2 left the in-memory window; they are read from completions
        assert writer.completion_lengths(["c0", "c1", "c4", "unknown"]) == {"c0": 0, "c1": 1, "c4": 4}
        # and events for them still update their outcome rows
        assert writer.add_events([shown("c0")]).result(5) == 1
        assert count(writer, "SELECT count(*) FROM completion_outcomes WHERE completion_id = 'c0' AND shown_event") == 1


@pytest.mark.parametrize(
    "event, message",
    [
        ({"completion_id": "c1", "kind": "liked"}, "kind must be one of"),
        ({"kind": "shown"}, "needs a completion_id"),
        ({"completion_id": "c1", "kind": "partial"}, "needs accepted_chars"),
        ({"completion_id": "c1", "kind": "retained", "retained_ratio": 0.5}, "needs retained_ratio and age_s"),
        ({"completion_id": "c1", "kind": "retained", "retained_ratio": 1.5, "age_s": 30}, r"in \[0, 1\]"),
        ({"completion_id": "c1", "kind": "shown", "accepted_char": 3}, "unknown event fields"),
        ({"completion_id": "c1", "kind": "shown", "at": "yesterday"}, "not an ISO-8601"),
        ({"completion_id": "c1", "kind": "accepted", "accepted_chars": -1}, "accepted_chars: invalid"),
    ],
)
def test_bad_events_are_refused_at_the_call(writer: TelemetryWriter, event: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        writer.add_events([shown("c1"), event])
    assert writer.status()["queued_events"] == 0  # nothing of the call was queued


def test_bad_completion_rows_are_refused_at_the_call(writer: TelemetryWriter) -> None:
    with pytest.raises(ValueError, match="unknown completion fields"):
        writer.add_completion({"id": "c1", "txt": "typo"})
    with pytest.raises(ValueError, match="needs an id"):
        writer.add_completion({"text": "x"})
    with pytest.raises(ValueError, match="total_ms"):
        writer.add_completion({"id": "c1", "total_ms": "fast"})


def test_execute_runs_admin_writes_in_order_and_reports_errors(writer: TelemetryWriter) -> None:
    def add(con):
        con.execute("INSERT INTO experiments (id, name, status) VALUES ('exp-7', 'team-py', 'running')")
        return "done"

    assert writer.execute(add).result(5) == "done"
    with pytest.raises(duckdb.Error):
        writer.execute(lambda con: con.execute("INSERT INTO experiments (id) VALUES ('exp-7')")).result(5)
    assert count(writer, "SELECT count(*) FROM experiments") == 1
    assert writer.status()["healthy"]  # a refused admin write is the caller's error, not the store's


def test_queue_limit_refuses_rather_than_grows(db_path: Path) -> None:
    writer = TelemetryWriter(db_path, max_queued=10)  # not started: nothing drains
    for i in range(12):
        writer.add_completion(completion(f"c{i}"))
    with pytest.raises(TelemetryWriteError, match="queue full"):
        writer.add_events([shown("c0")]).result(0)
    assert writer.status()["dropped_completions"] == 2
    writer.close()


def test_a_spool_replay_spread_over_months_is_still_deduplicated(writer: TelemetryWriter) -> None:
    """De-duplication scans only the batch's "at" ranges (at most 32 of them): events spread
    over 100 days, replayed, must all be recognised however the ranges are merged."""
    writer.add_completion(completion("c1"))
    replay = [shown("c1", day * 86400 + k) for day in range(100) for k in range(3)]
    assert writer.add_events(replay).result(5) == 300
    assert writer.add_events(replay[::-1]).result(5) == 0
    assert writer.add_events(replay[:10] + [shown("c1", -5)]).result(5) == 1


def test_at_ranges_cover_every_value_with_few_ranges() -> None:
    from feedback.ingest import MAX_RANGES, at_ranges

    values = [T0 + timedelta(days=d, seconds=s) for d in range(0, 400, 7) for s in (0, 1, 30)]
    ranges = at_ranges(values)
    assert len(ranges) <= MAX_RANGES
    assert all(any(lo <= v <= hi for lo, hi in ranges) for v in values)
    assert at_ranges([T0, T0 + timedelta(seconds=20)]) == [(T0, T0 + timedelta(seconds=20))]  # close: one range
    assert at_ranges([]) == []


def test_a_waiter_that_gave_up_does_not_break_the_writer(writer: TelemetryWriter) -> None:
    """An HTTP request cancelled while its events were queued cancels their future; the events
    are still committed and the writer stays healthy."""
    writer.add_completion(completion("c1"))
    given_up = writer.add_events([shown("c1")])
    given_up.cancel()
    assert writer.add_events([shown("c1", 2.0)]).result(5) == 1
    writer.flush(5)
    assert count(writer, "SELECT count(*) FROM events") == 2
    assert writer.status()["healthy"], writer.status()
