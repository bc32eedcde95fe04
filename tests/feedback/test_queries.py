"""Reports over a hand-built dataset (dataset.py) whose right answers are worked out here."""
from __future__ import annotations

from contextlib import closing
from dataclasses import asdict
from datetime import timedelta

import pytest

from feedback import queries
from feedback.outcomes import rebuild_outcomes
from feedback.writer import TelemetryWriter

from .dataset import D1, D2, D3, load


@pytest.fixture
def cursor(writer: TelemetryWriter):
    assert load(writer) == 16  # 18 events sent, two of them twice
    with closing(writer.reader()) as cur:
        yield cur


def by_key(rows) -> dict:
    return {r.key: asdict(r) for r in rows}


def test_acceptance_by_adapter(cursor) -> None:
    rows = by_key(queries.acceptance(cursor, "adapter"))
    assert list(rows) == ["A", "B"]
    a, b = rows["A"], rows["B"]
    # A: c1 accepted (10 chars), c2 partially (largest partial: 8), c3 rejected, c4 never shown
    assert (a["completions"], a["shown"], a["accepted"], a["accepted_chars"]) == (4, 3, 2, 18)
    assert a["acceptance_rate"] == pytest.approx(2 / 3)
    assert a["accepted_chars_per_shown"] == pytest.approx(6.0)
    # retained at 30 s: c1 kept 100 % of 10 chars, c2 50 % of 8 -> weighted by chars
    assert a["retained_30s"] == pytest.approx((10 * 1.0 + 8 * 0.5) / 18)
    assert a["retained_120s"] == pytest.approx(0.5)  # c1 only (its 125 s report)
    assert a["retained_600s"] == pytest.approx(0.2)  # c1's 590 s report
    # total_ms 100, 200, 300, 400: linear interpolation between order statistics
    assert (a["latency_p50_ms"], a["latency_p90_ms"], a["latency_p99_ms"]) == pytest.approx((250, 370, 397))
    # B: c5 accepted without a `shown` event (counts as shown), c6 shown and dismissed
    assert (b["completions"], b["shown"], b["accepted"], b["accepted_chars"]) == (2, 2, 1, 50)
    assert (b["acceptance_rate"], b["accepted_chars_per_shown"]) == pytest.approx((0.5, 25.0))
    assert b["retained_30s"] == pytest.approx(0.9)  # 31 s is nearer 30 s than 33 s
    assert b["retained_120s"] is None and b["retained_600s"] is None
    assert (b["latency_p50_ms"], b["latency_p90_ms"], b["latency_p99_ms"]) == pytest.approx((100, 140, 149))


def test_acceptance_by_client_and_language(cursor) -> None:
    clients = by_key(queries.acceptance(cursor, "client"))
    vscode, neovim = clients["vscode"], clients["neovim"]
    assert (vscode["completions"], vscode["shown"], vscode["accepted"], vscode["accepted_chars"]) == (4, 4, 3, 68)
    assert vscode["retained_30s"] == pytest.approx((10 * 1.0 + 8 * 0.5 + 50 * 0.9) / 68)
    assert (neovim["shown"], neovim["accepted"], neovim["acceptance_rate"], neovim["retained_30s"]) == (1, 0, 0.0, None)
    languages = by_key(queries.acceptance(cursor, "language"))
    assert languages["python"] | {"key": "A"} == by_key(queries.acceptance(cursor, "adapter"))["A"]
    with pytest.raises(ValueError, match="by must be one of"):
        queries.acceptance(cursor, "moon")


def test_acceptance_by_day_is_a_dense_time_series(cursor) -> None:
    rows = queries.acceptance(cursor, "day")
    assert [r.key for r in rows] == [D1.date(), D2.date(), D3.date()]
    assert (rows[0].completions, rows[0].accepted_chars) == (4, 18)
    assert (rows[1].completions, rows[1].shown, rows[1].acceptance_rate, rows[1].latency_p50_ms) == (0, 0, None, None)
    assert (rows[2].completions, rows[2].accepted_chars) == (2, 50)
    # since / until select by creation time; the series covers the asked range
    later = queries.acceptance(cursor, "day", since=D2)
    assert [(r.key, r.completions) for r in later] == [(D2.date(), 0), (D3.date(), 2)]
    first = queries.acceptance(cursor, "adapter", until=D2)
    assert [(r.key, r.completions) for r in first] == [("A", 4)]
    assert queries.acceptance(cursor, "day", since=D3 + timedelta(days=1)) == []


def test_recent_completions_newest_first_with_outcomes(cursor) -> None:
    rows = queries.recent_completions(cursor)
    assert [r["id"] for r in rows] == ["c6", "c5", "c4", "c3", "c2", "c1"]
    outcome = {r["id"]: (r["outcome"], r["shown"], r["accepted_chars"], r["best_retained_ratio"]) for r in rows}
    assert outcome == {
        "c6": ("dismissed", True, 0, None),
        "c5": ("accepted", True, 50, 0.9),
        "c4": (None, False, 0, None),
        "c3": ("rejected", True, 0, None),
        "c2": ("partial", True, 8, 0.5),
        "c1": ("accepted", True, 10, 1.0),
    }
    assert rows[0]["text"] == "x" * 60 and rows[0]["language"] == "go"  # every completions column
    assert [r["id"] for r in queries.recent_completions(cursor, limit=2, offset=1)] == ["c5", "c4"]
    assert [r["id"] for r in queries.recent_completions(cursor, adapter="A")] == ["c4", "c3", "c2", "c1"]
    assert [r["id"] for r in queries.recent_completions(cursor, user="u3")] == ["c6", "c5"]
    assert queries.recent_completions(cursor, user="nobody") == []


def test_arm_counts(cursor) -> None:
    arms = {r.arm: asdict(r) for r in queries.arm_counts(cursor, "exp-1")}
    # control: u1 (c1, c3), u2 (c2). Retained: c1 at 120 s (0.5 x 10), c2 has only its
    # 28 s report, the latest age available (0.5 x 8).
    assert arms["control"] == {"arm": "control", "users": 2, "completions": 3, "shown": 3, "accepted": 2,
                               "accepted_chars": 18, "retained_chars": pytest.approx(9.0), "retained_base_chars": 18}
    # cand: u3 (c5, c6); c5's latest report is the 33 s one (0.1 x 50)
    assert arms["cand"] == {"arm": "cand", "users": 1, "completions": 2, "shown": 2, "accepted": 1,
                            "accepted_chars": 50, "retained_chars": pytest.approx(5.0), "retained_base_chars": 50}
    assert queries.arm_counts(cursor, "no-such-experiment") == []


def test_arm_counts_by_day_are_cumulative_for_every_arm_and_day(cursor) -> None:
    rows = queries.arm_counts_by_day(cursor, "exp-1")
    table = {(r.day, r.arm): (r.users, r.completions, r.shown, r.accepted, r.accepted_chars) for r in rows}
    d1, d2, d3 = D1.date(), D2.date(), D3.date()
    assert table == {
        (d1, "cand"): (0, 0, 0, 0, 0), (d1, "control"): (2, 3, 3, 2, 18),
        (d2, "cand"): (0, 0, 0, 0, 0), (d2, "control"): (2, 3, 3, 2, 18),
        (d3, "cand"): (1, 2, 2, 1, 50), (d3, "control"): (2, 3, 3, 2, 18),
    }  # fmt: skip
    assert [r.retained_chars for r in rows if r.day == d3] == pytest.approx([5.0, 9.0])
    assert queries.arm_counts_by_day(cursor, "no-such-experiment") == []


def test_completion_lengths(cursor) -> None:
    assert queries.completion_lengths(cursor, ["c1", "c5", "c5", "zz"]) == {"c1": 10, "c5": 50}
    assert queries.completion_lengths(cursor, []) == {}


def test_outcomes_kept_by_the_writer_equal_a_rebuild_from_events(writer: TelemetryWriter) -> None:
    load(writer)
    snapshot = "SELECT * FROM completion_outcomes ORDER BY completion_id"
    with closing(writer.reader()) as cur:
        incremental = cur.execute(snapshot).fetchall()
    assert writer.execute(rebuild_outcomes).result(10) == 6
    with closing(writer.reader()) as cur:
        assert cur.execute(snapshot).fetchall() == incremental


def test_final_outcome_is_the_latest_event_whatever_the_arrival_order(writer: TelemetryWriter) -> None:
    writer.add_completion({"id": "z", "created_at": D1, "text": "abcdef"})
    at = lambda s: D1 + timedelta(seconds=s)  # noqa: E731
    writer.add_events([{"completion_id": "z", "kind": "accepted", "at": at(9)}]).result(5)
    writer.add_events([{"completion_id": "z", "kind": "rejected", "at": at(5)}]).result(5)  # older, arrives later
    writer.add_events([{"completion_id": "z", "kind": "cancelled", "at": at(1)}]).result(5)
    with closing(writer.reader()) as cur:
        row = queries.recent_completions(cur)[0]
    assert (row["outcome"], row["accepted"], row["rejected"], row["cancelled"], row["accepted_chars"]) == (
        "accepted", True, True, True, 6)  # fmt: skip
