"""Accepted suggestions from telemetry as training examples; rejected ones as negatives.

The rows come from the server's Parquet export (GET /v1/feedback/export, or the DuckDB file
itself when no server holds it). A row without code text (the server ran with
store_code = false) yields nothing. Text is scrubbed of secrets like mined code.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from trainer.config import DataConfig
from trainer.examples import Example
from feedback.secrets import scrub


def examples_from_export(parquet: Path, config: DataConfig) -> tuple[list[Example], Counter]:
    """(examples, counts by what happened to each row)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(str(parquet)).to_pylist() if parquet.stat().st_size else []
    return examples_from_rows(rows, config)


def examples_from_rows(rows: Iterable[dict[str, Any]], config: DataConfig) -> tuple[list[Example], Counter]:
    examples, counts = [], Counter()
    for row in rows:
        # The export's `accepted` is true for partial accepts too (feedback/outcomes.py).
        accepted = bool(row.get("accepted")) or bool(row.get("partial"))
        kind = "accepted" if accepted else "rejected" if row.get("rejected") else None
        if kind is None:
            counts["no_outcome"] += 1  # shown and ignored, or never shown: teaches nothing
            continue
        if row.get("prefix") is None or row.get("text") is None:
            counts["no_code_stored"] += 1
            continue
        text = taken_text(row) if kind == "accepted" else row["text"]
        if text is None:
            counts["partial_cut_unknown"] += 1
            continue
        if not text.strip():
            counts["empty"] += 1
            continue
        prefix, a = scrub(row["prefix"])
        suffix, b = scrub(row.get("suffix") or "")
        middle, c = scrub(text)
        counts["secrets_scrubbed"] += sum((a + b + c).values())
        counts[kind] += 1
        examples.append(Example(
            prefix=prefix, suffix=suffix, middle=middle, kind=kind, source="telemetry",
            path=row.get("filepath") or "", commit=row["id"], time=_unix(row.get("created_at")),
            language=row.get("language") or "", weight=retention_weight(row, config) if kind == "accepted" else 1.0,
            user=row.get("user_id") or "",
        ))
    return examples, counts


def taken_text(row: dict[str, Any]) -> str | None:
    """The part of an accepted suggestion the user took: all of it, or its first
    `accepted_chars` characters for a partial accept.

    The export gives `accepted_chars` = text_chars after a full accept (also when a partial
    one came first), else the largest partial accept; `text_chars` is the length the client
    saw, before the server scrubbed secrets from the stored text. None when the stored text
    no longer lines up with those characters (a secret was replaced) and only part was taken.
    """
    text = row["text"]
    shown = row.get("text_chars")
    shown = len(text) if shown is None else int(shown)
    taken = row.get("accepted_chars")
    if taken is None or int(taken) >= shown:
        return text
    if len(text) != shown:
        return None
    return text[: max(int(taken), 0)]


def retention_weight(row: dict[str, Any], config: DataConfig) -> float:
    """min_retained_weight for text that was all rewritten, 1.0 for text kept whole; the
    latest retention report counts; unknown retention sits halfway."""
    retained = next((row.get(k) for k in ("retained_600s", "retained_120s", "retained_30s") if row.get(k) is not None), None)
    floor = config.min_retained_weight
    share = 0.5 if retained is None else min(max(float(retained), 0.0), 1.0)
    return round(floor + (1.0 - floor) * share, 4)


def _unix(value: Any) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return float(value or 0.0)
