"""What became of each completion: the `completion_outcomes` table and its definitions.

Per completion (DESIGN.md "Telemetry"):
- shown: a `shown` event, or an `accepted`/`partial` one (accepting implies it was shown:
  a lost `shown` must not push the acceptance rate above 1 or break the A/B test).
- accepted: an `accepted` or `partial` event.
- accepted_chars: text_chars for a full accept, else the largest partial accepted_chars
  (never more than text_chars), else 0.
- retained_30s/120s/600s: a `retained` event's ratio, each event placed at the nearest of
  those ages (boundaries 75 s and 360 s); several in one bucket: the closest age wins.
- retained_latest: the ratio at the greatest age reported; retained_best: the highest.
- final_kind: the latest (by "at") of accepted/partial/rejected/dismissed/cancelled.

The writer keeps the table current: each batch's new events are summarised with
SUMMARY_SQL and folded into the rows by merge_outcomes(). rebuild_outcomes() recomputes
the whole table from events with the same SUMMARY_SQL (repairs; tests check both agree).
"""
from __future__ import annotations

from datetime import datetime

import duckdb

from .rows import FINAL_KINDS, to_utc

_FINAL = ", ".join(f"'{k}'" for k in FINAL_KINDS)
_FLAGS = ("shown_event", "accepted_full", "partial", "rejected", "dismissed", "cancelled")
_BUCKETS = {30: "age_s < 75", 120: "age_s >= 75 AND age_s < 360", 600: "age_s >= 360"}

# Per-completion summary of the events in {source}.
SUMMARY_SQL = f"""
SELECT completion_id,
    bool_or(kind = 'shown')     AS shown_event,
    bool_or(kind = 'accepted')  AS accepted_full,
    bool_or(kind = 'partial')   AS partial,
    max(accepted_chars) FILTER (WHERE kind = 'partial') AS partial_chars,
    bool_or(kind = 'rejected')  AS rejected,
    bool_or(kind = 'dismissed') AS dismissed,
    bool_or(kind = 'cancelled') AS cancelled,
    arg_max(kind, "at") FILTER (WHERE kind IN ({_FINAL})) AS final_kind,
    max("at") FILTER (WHERE kind IN ({_FINAL})) AS final_at,
    {", ".join(
        f"arg_min(retained_ratio, abs(age_s - {a})) FILTER (WHERE kind = 'retained' AND {cond}) AS retained_{a}s, "
        f"arg_min(age_s, abs(age_s - {a})) FILTER (WHERE kind = 'retained' AND {cond}) AS retained_{a}s_age"
        for a, cond in _BUCKETS.items()
    )},
    arg_max(retained_ratio, age_s) FILTER (WHERE kind = 'retained') AS retained_latest,
    max(age_s) FILTER (WHERE kind = 'retained') AS retained_latest_age,
    max(retained_ratio) FILTER (WHERE kind = 'retained') AS retained_best
FROM {{source}}
GROUP BY completion_id
"""


def _nearer(age: int, column: str) -> str:
    return (
        f"CASE WHEN s.retained_{age}s_age IS NOT NULL AND (o.retained_{age}s_age IS NULL OR "
        f"abs(s.retained_{age}s_age - {age}) < abs(o.retained_{age}s_age - {age})) THEN s.{column} ELSE o.{column} END"
    )


def _later(stamp: str, column: str) -> str:
    return f"CASE WHEN s.{stamp} IS NOT NULL AND (o.{stamp} IS NULL OR s.{stamp} >= o.{stamp}) THEN s.{column} ELSE o.{column} END"


# How a batch summary `s` (SUMMARY_SQL over the batch) folds into a stored row `o`.
MERGED: dict[str, str] = {
    **{flag: f"o.{flag} OR s.{flag}" for flag in _FLAGS},
    "partial_chars": "greatest(o.partial_chars, s.partial_chars)",
    "final_kind": _later("final_at", "final_kind"),
    "final_at": "greatest(o.final_at, s.final_at)",
    **{col: _nearer(a, col) for a in _BUCKETS for col in (f"retained_{a}s", f"retained_{a}s_age")},
    "retained_latest": _later("retained_latest_age", "retained_latest"),
    "retained_latest_age": "greatest(o.retained_latest_age, s.retained_latest_age)",
    "retained_best": "greatest(o.retained_best, s.retained_best)",
}

def merge_outcomes(con: duckdb.DuckDBPyConnection, events: str, created_since: datetime) -> int:
    """Fold the events in table `events` into completion_outcomes; return rows updated.

    `created_since` (the oldest of those events' completions) bounds the scan to the
    table's recent tail. The update goes through rowids in order: a plain UPDATE … FROM
    with that bound let DuckDB build its hash table on the (filtered) outcomes side and
    apply the changes in random row order, ten times slower for a 20,000-event batch.
    """
    summary = con.sql(
        f"""
        SELECT o.rowid AS _rid, s.*
        FROM completion_outcomes o JOIN ({SUMMARY_SQL.format(source=events)}) s ON o.completion_id = s.completion_id
        WHERE {created_bound(created_since)} ORDER BY _rid
        """
    ).to_arrow_table()
    if summary.num_rows == 0:
        return 0
    assignments = ", ".join(f"{col} = {expr}" for col, expr in MERGED.items())
    first = summary.column("_rid")[0].as_py()
    con.register("_cl_summary", summary)
    try:
        con.execute(
            f"UPDATE completion_outcomes o SET {assignments} FROM _cl_summary s WHERE o.rowid = s._rid AND o.rowid >= {first}"
        )
    finally:
        con.unregister("_cl_summary")
    return summary.num_rows


# Columns copied from completions when a completion is inserted.
COPIED_COLUMNS = ("created_at", "user_id", "client", "language", "adapter", "experiment", "arm", "text_chars", "total_ms",
                  "context_snippets")

# What readers select from `completion_outcomes o`: its columns plus the derived ones.
DERIVED_SQL = """
    o.*,
    o.shown_event OR o.accepted_full OR o.partial AS shown,
    o.accepted_full OR o.partial AS accepted,
    CASE WHEN o.accepted_full THEN coalesce(o.text_chars, 0)
         WHEN o.partial THEN least(coalesce(o.partial_chars, 0), coalesce(o.text_chars, o.partial_chars, 0))
         ELSE 0 END AS accepted_chars
"""

# Outcome columns of a completion as recent_completions() and export_parquet() give them.
OUTCOME_COLUMNS = (
    "shown", "accepted", "partial", "partial_chars", "accepted_chars", "rejected", "dismissed", "cancelled",
    "final_kind", "retained_30s", "retained_120s", "retained_600s", "retained_latest", "retained_best",
)  # fmt: skip
_OUTCOME_FLAGS = ("shown", "accepted", "partial", "rejected", "dismissed", "cancelled")


def outcome_select(column: str) -> str:
    """`o.column` as selected beside a LEFT JOIN (a completion without its outcome row
    reads as never shown)."""
    if column in _OUTCOME_FLAGS:
        return f"coalesce(o.{column}, FALSE) AS {column}"
    return f"coalesce(o.{column}, 0) AS {column}" if column == "accepted_chars" else f"o.{column}"


def outcomes_sql(where: str = "TRUE") -> str:
    """Rows of completion_outcomes `o` matching `where`, with the derived columns."""
    return f"SELECT {DERIVED_SQL} FROM completion_outcomes o WHERE {where}"


def rebuild_outcomes(con: duckdb.DuckDBPyConnection) -> int:
    """Recompute completion_outcomes from completions and events (run inside the writer,
    e.g. `writer.execute(rebuild_outcomes)`, or on a database no server holds)."""
    copied = ", ".join(f"c.{col}" for col in COPIED_COLUMNS)
    con.execute("DELETE FROM completion_outcomes")
    return con.execute(
        f"""
        INSERT INTO completion_outcomes BY NAME
        SELECT c.id AS completion_id, {copied}, s.* EXCLUDE (completion_id, {", ".join(_FLAGS)}),
            {", ".join(f"coalesce(s.{flag}, FALSE) AS {flag}" for flag in _FLAGS)}
        FROM completions c LEFT JOIN ({SUMMARY_SQL.format(source="events")}) s ON s.completion_id = c.id
        ORDER BY c.created_at
        """
    ).fetchall()[0][0]


def sql_timestamp(ts: datetime) -> str:
    """A TIMESTAMP literal, only ever built from datetime objects, never caller strings.
    Literals rather than parameters: the optimizer turns them into zone-map filters."""
    return f"TIMESTAMP '{to_utc(ts, 'timestamp').isoformat(sep=' ')}'"


def created_bound(created_since: datetime) -> str:
    """Restrict `completion_outcomes o` to rows created at or after `created_since`."""
    return f"o.created_at >= {sql_timestamp(created_since)}"
