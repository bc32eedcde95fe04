"""A small telemetry dataset whose every report is known by hand (see test_queries.py)."""
from __future__ import annotations

from datetime import datetime, timedelta

from feedback.writer import TelemetryWriter

D1, D2, D3 = datetime(2026, 3, 1), datetime(2026, 3, 2), datetime(2026, 3, 3)


def _c(cid, created, adapter, language, client, user, arm, chars, total_ms):
    return {"id": cid, "created_at": created, "adapter": adapter, "language": language, "client": client,
            "user_id": user, "experiment": "exp-1" if arm else None, "arm": arm, "text": "x" * chars,
            "prefix": "def f():\n    ", "total_ms": total_ms}  # fmt: skip


COMPLETIONS = [
    _c("c1", D1 + timedelta(hours=10), "A", "python", "vscode", "u1", "control", 10, 100.0),
    _c("c2", D1 + timedelta(hours=10, minutes=1), "A", "python", "vscode", "u2", "control", 20, 200.0),
    _c("c3", D1 + timedelta(hours=10, minutes=2), "A", "python", "neovim", "u1", "control", 30, 300.0),
    _c("c4", D1 + timedelta(hours=10, minutes=3), "A", "python", "neovim", "u4", None, 40, 400.0),
    _c("c5", D3 + timedelta(hours=9), "B", "go", "vscode", "u3", "cand", 50, 50.0),
    _c("c6", D3 + timedelta(hours=9, minutes=5), "B", "go", "vscode", "u3", "cand", 60, 150.0),
]
_CREATED = {c["id"]: c["created_at"] for c in COMPLETIONS}


def ev(cid: str, kind: str, after_s: float, **extra) -> dict:
    return {"completion_id": cid, "kind": kind, "at": _CREATED[cid] + timedelta(seconds=after_s), **extra}


def kept(cid: str, age_s: float, ratio: float) -> dict:
    return ev(cid, "retained", 2 + age_s, age_s=age_s, retained_ratio=ratio)


# Sent as separate calls, in this order: later calls fold into outcome rows written by
# earlier ones (c5's nearer-to-30 s report arrives after the farther one; c2's smaller
# partial accept after the larger), and some events are sent twice.
CALLS = [
    [ev("c1", "shown", 1), ev("c2", "shown", 1), ev("c3", "shown", 1), ev("c6", "shown", 1)],
    [ev("c1", "accepted", 2), ev("c2", "partial", 3, accepted_chars=8), ev("c3", "rejected", 2)],
    [ev("c5", "accepted", 2), kept("c5", 33, 0.1), ev("c6", "dismissed", 4)],
    [kept("c1", 30, 1.0), ev("c2", "partial", 2, accepted_chars=5), kept("c2", 28, 0.5), kept("c5", 31, 0.9)],
    [kept("c1", 125, 0.5), kept("c1", 590, 0.2), ev("c1", "shown", 1), kept("c5", 33, 0.1)],  # two repeats
]


def load(writer: TelemetryWriter) -> int:
    for row in COMPLETIONS:
        writer.add_completion(row)
    return sum(writer.add_events(call).result(10) for call in CALLS)
