"""Export rows -> examples: accepted weighted by retention, partial accepts cut, rejected kept
apart, and nothing from a server that stored no code (store_code = false)."""
from __future__ import annotations

from datetime import datetime, timezone

from trainer.config import DataConfig
from trainer.telemetry_data import examples_from_rows, retention_weight


def row(i: int, **kw) -> dict:
    base = {"id": f"cmpl-{i}", "created_at": datetime(2026, 11, 1, 12, i), "prefix": "def f():\n    ", "suffix": "",
            "text": "return 42\n", "filepath": "a.py", "language": "python", "accepted": False, "partial": False,
            "partial_chars": None, "rejected": False, "retained_30s": None, "retained_120s": None, "retained_600s": None}
    return base | kw


def test_accepted_partial_rejected_and_no_code():
    rows = [
        row(1, accepted=True, retained_30s=1.0, retained_600s=0.2),  # the latest report counts
        row(2, partial=True, partial_chars=6),
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
