"""Export rows -> examples: accepted weighted by retention, partial accepts cut, rejected kept
apart, and nothing from a server that stored no code (store_code = false)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from trainer.config import DataConfig
from trainer.telemetry_data import examples_from_rows, retention_weight


def row(i: int, **kw) -> dict:
    base = {"id": f"cmpl-{i}", "created_at": datetime(2026, 11, 1, 12, i), "prefix": "def f():\n    ", "suffix": "",
            "text": "return 42\n", "filepath": "a.py", "language": "python", "accepted": False, "partial": False,
            "partial_chars": None, "accepted_chars": 0, "text_chars": 10, "rejected": False, "retained_30s": None,
            "retained_120s": None, "retained_600s": None}
    return base | kw


def test_accepted_partial_rejected_and_no_code():
    rows = [
        row(1, accepted=True, accepted_chars=10, retained_30s=1.0, retained_600s=0.2),  # the latest report counts
        row(2, accepted=True, partial=True, partial_chars=6, accepted_chars=6),  # as the export gives a partial
        row(3, rejected=True),
        row(4, accepted=True, prefix=None, suffix=None, text=None),  # store_code = false
        row(5),  # shown, then nothing: no outcome
    ]
    examples, counts = examples_from_rows(rows, DataConfig())
    by_id = {e.commit: e for e in examples}
    assert set(by_id) == {"cmpl-1", "cmpl-2", "cmpl-3"}
    assert by_id["cmpl-1"].kind == "accepted" and by_id["cmpl-1"].weight == 0.6
    assert by_id["cmpl-2"].middle == "return" and by_id["cmpl-2"].weight == 0.75  # retention unknown
    assert by_id["cmpl-3"].kind == "rejected"
    assert counts["no_code_stored"] == 1 and counts["no_outcome"] == 1
    assert by_id["cmpl-1"].time == datetime(2026, 11, 1, 12, 1, tzinfo=timezone.utc).timestamp()  # naive = UTC


def test_retention_weight_bounds():
    config = DataConfig(min_retained_weight=0.5)
    assert retention_weight({"retained_30s": 0.0}, config) == 0.5
    assert retention_weight({"retained_120s": 1.0}, config) == 1.0
    assert retention_weight({"retained_30s": 3.0}, config) == 1.0  # clamped


T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
SECRET = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def test_partial_accept_trains_on_the_part_taken_from_a_real_export(tmp_path):
    """Through feedback's own writer and export: the export marks a partial accept
    accepted=True, and the example's middle is exactly the first accepted_chars characters."""
    from feedback.export import export_file
    from feedback.writer import TelemetryWriter
    from trainer.telemetry_data import examples_from_export

    text = "total = price * qty\nreturn total + tax\n"
    completions = {
        "c-partial": text,  # took the first line and "return"
        "c-partial-then-full": text,  # took a word, then the rest: all of it
        "c-full": text,
        "c-partial-secret": f'token = "{SECRET}"\nreturn token\n',  # stored text scrubbed: cut unknown
    }
    events = {
        "c-partial": [("partial", 26)],
        "c-partial-then-full": [("partial", 5), ("accepted", None)],
        "c-full": [("accepted", None)],
        "c-partial-secret": [("partial", 8)],
    }
    db = tmp_path / "telemetry.duckdb"
    writer = TelemetryWriter(db, flush_interval_s=0.0).start()
    try:
        for i, (cid, body) in enumerate(completions.items()):
            writer.add_completion({"id": cid, "created_at": T0 + timedelta(minutes=i), "language": "python",
                                   "filepath": "shop/cart.py", "prefix": "def cost(price, qty, tax):\n    ",
                                   "suffix": "\n", "text": body})
        rows = [{"completion_id": cid, "kind": kind, "at": T0 + timedelta(minutes=10, seconds=j), "accepted_chars": chars}
                for cid, evs in events.items() for j, (kind, chars) in enumerate([("shown", None), *evs])]
        assert writer.add_events(rows).result(10) == len(rows)
    finally:
        writer.close(timeout=10)
    out = tmp_path / "export.parquet"
    assert export_file(db, out) == 4
    import pyarrow.parquet as pq

    exported = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert exported["c-partial"]["accepted"] and exported["c-partial"]["accepted_chars"] == 26  # the real shape

    examples, counts = examples_from_export(out, DataConfig())
    middles = {e.commit: e.middle for e in examples}
    assert middles["c-partial"] == text[:26] == "total = price * qty\nreturn"
    assert middles["c-partial-then-full"] == text and middles["c-full"] == text
    assert "c-partial-secret" not in middles and counts["partial_cut_unknown"] == 1
    assert counts["accepted"] == 3 and all(e.kind == "accepted" for e in examples)
