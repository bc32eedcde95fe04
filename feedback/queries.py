"""Reports over the telemetry: plain functions taking a connection or cursor.

See outcomes.py for what shown / accepted / accepted_chars / retained mean.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from typing import Any, Literal

import duckdb

from .outcomes import OUTCOME_COLUMNS, created_bound, outcome_select, outcomes_sql, sql_timestamp
from .rows import to_utc
from codeloop.names import BASE

GroupBy = Literal["adapter", "language", "client", "day", "context"]
_GROUP_KEYS: dict[str, str] = {
    "adapter": "adapter",
    "language": "language",
    "client": "client",
    "day": "CAST(created_at AS DATE)",
    # Whether repository context (snippets) went into the prompt.
    "context": "CASE WHEN coalesce(context_snippets, 0) > 0 THEN 'context' ELSE 'no context' END",
}
_OUTCOME_SELECT = ", ".join(outcome_select(c) for c in OUTCOME_COLUMNS)
_ACCEPTED_CHARS_RETAINED = (
    "sum(accepted_chars * {r}) FILTER (WHERE {r} IS NOT NULL) / "
    "nullif(sum(accepted_chars) FILTER (WHERE {r} IS NOT NULL), 0)"
)


@dataclass(frozen=True)
class AcceptanceRow:
    key: str | date | None
    completions: int
    shown: int
    accepted: int
    acceptance_rate: float | None  # accepted / shown
    accepted_chars: int
    accepted_chars_per_shown: float | None
    retained_30s: float | None  # share of accepted characters still there, char-weighted
    retained_120s: float | None
    retained_600s: float | None
    latency_p50_ms: float | None  # of total_ms
    latency_p90_ms: float | None
    latency_p99_ms: float | None


@dataclass(frozen=True)
class ArmCounts:
    arm: str | None
    users: int
    completions: int
    shown: int
    accepted: int
    accepted_chars: int
    # sum of accepted_chars x retained ratio (120 s, else the latest age reported), over
    # accepted completions with a retained report; retained_base_chars: their accepted_chars
    retained_chars: float
    retained_base_chars: int


@dataclass(frozen=True)
class ArmDay(ArmCounts):
    """ArmCounts cumulated from the experiment's first day up to and including `day`."""

    day: date | None = None


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def acceptance(
    con: duckdb.DuckDBPyConnection,
    by: GroupBy = "adapter",
    since: datetime | None = None,
    until: datetime | None = None,
    adapter: str | None = None,
) -> list[AcceptanceRow]:
    """Acceptance per adapter / language / client / day / context of completions created in
    [since, until). by="day" is a time series: days without completions are filled in."""
    if by not in _GROUP_KEYS:
        raise ValueError(f"by must be one of {sorted(_GROUP_KEYS)}, got {by!r}")
    since = to_utc(since, "since") if since is not None else None  # days are UTC days
    until = to_utc(until, "until") if until is not None else None
    where = ["TRUE"]
    if since is not None:
        where.append(created_bound(since))
    if until is not None:
        where.append(f"o.created_at < {sql_timestamp(until)}")
    params: list[Any] = []
    if adapter == BASE:  # the base model has no adapter (NULL); filters name it as the API does
        where.append("o.adapter IS NULL")
    elif adapter is not None:
        where.append("o.adapter = ?")
        params.append(adapter)
    outcomes = outcomes_sql(" AND ".join(where))
    retained = {age: _ACCEPTED_CHARS_RETAINED.format(r=f"retained_{age}s") for age in (30, 120, 600)}
    rows = _rows(
        con,
        f"""
        WITH o AS ({outcomes})
        SELECT {_GROUP_KEYS[by]} AS key,
            count(*) AS completions,
            count(*) FILTER (WHERE shown) AS shown,
            count(*) FILTER (WHERE accepted) AS accepted,
            CAST(sum(accepted_chars) AS BIGINT) AS accepted_chars,
            {retained[30]} AS retained_30s,
            {retained[120]} AS retained_120s,
            {retained[600]} AS retained_600s,
            quantile_cont(total_ms, [0.5, 0.9, 0.99]) AS latency
        FROM o GROUP BY ALL ORDER BY key NULLS LAST
        """,
        params,
    )
    result = [_acceptance_row(r) for r in rows]
    if by == "day" and result:
        result = _fill_days(result, since, until)
    return result


def _acceptance_row(r: dict[str, Any]) -> AcceptanceRow:
    shown, latency = r["shown"], r["latency"] or [None, None, None]
    return AcceptanceRow(
        key=r["key"],
        completions=r["completions"],
        shown=shown,
        accepted=r["accepted"],
        acceptance_rate=r["accepted"] / shown if shown else None,
        accepted_chars=r["accepted_chars"] or 0,
        accepted_chars_per_shown=(r["accepted_chars"] or 0) / shown if shown else None,
        retained_30s=r["retained_30s"],
        retained_120s=r["retained_120s"],
        retained_600s=r["retained_600s"],
        latency_p50_ms=latency[0],
        latency_p90_ms=latency[1],
        latency_p99_ms=latency[2],
    )


def _fill_days(rows: list[AcceptanceRow], since: datetime | None, until: datetime | None) -> list[AcceptanceRow]:
    by_day = {r.key: r for r in rows}
    first = since.date() if since is not None else min(by_day)
    last = (until - timedelta(microseconds=1)).date() if until is not None else max(by_day)
    empty = dict(completions=0, shown=0, accepted=0, acceptance_rate=None, accepted_chars=0,
                 accepted_chars_per_shown=None, retained_30s=None, retained_120s=None, retained_600s=None,
                 latency_p50_ms=None, latency_p90_ms=None, latency_p99_ms=None)  # fmt: skip
    days = (first + timedelta(days=i) for i in range((last - first).days + 1))
    return [by_day.get(d) or AcceptanceRow(key=d, **empty) for d in days]


def recent_completions(
    con: duckdb.DuckDBPyConnection,
    limit: int = 20,
    offset: int = 0,
    adapter: str | None = None,
    user: str | None = None,
) -> list[dict[str, Any]]:
    """Newest completions first, each with its outcome (for `codeloop logs`): every
    completions column plus shown, outcome (final kind; "shown" if only shown),
    accepted_chars, best_retained_ratio and the other outcome columns."""
    where, params = ["TRUE"], []
    if adapter is not None:
        where.append("adapter = ?")
        params.append(adapter)
    if user is not None:
        where.append("user_id = ?")
        params.append(user)
    page = con.execute(
        f"SELECT id, created_at FROM completions WHERE {' AND '.join(where)} "
        "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    if not page:
        return []
    oldest = min(created for _, created in page)
    outcomes = outcomes_sql(f"{created_bound(oldest)} AND o.completion_id IN (SELECT unnest($ids))")
    rows = _rows(
        con,
        f"""
        SELECT c.*, {_OUTCOME_SELECT}
        FROM completions c LEFT JOIN ({outcomes}) o ON o.completion_id = c.id
        WHERE c.id IN (SELECT unnest($ids)) ORDER BY c.created_at DESC, c.id DESC
        """,
        {"ids": [i for i, _ in page]},
    )
    for row in rows:
        row["outcome"] = row["final_kind"] or ("shown" if row["shown"] else None)
        row["best_retained_ratio"] = row["retained_best"]
    return rows


def _experiment_outcomes(con: duckdb.DuckDBPyConnection, experiment: str) -> str | None:
    first = con.execute(
        "SELECT min(created_at) FROM completion_outcomes WHERE experiment = ?", [experiment]
    ).fetchall()[0][0]
    if first is None:
        return None
    return outcomes_sql(f"{created_bound(first)} AND o.experiment = ?")


_ARM_AGG = """
    count(DISTINCT user_id) AS users,
    count(*) AS completions,
    count(*) FILTER (WHERE shown) AS shown,
    count(*) FILTER (WHERE accepted) AS accepted,
    CAST(sum(accepted_chars) AS BIGINT) AS accepted_chars,
    coalesce(sum(accepted_chars * coalesce(retained_120s, retained_latest)), 0) AS retained_chars,
    CAST(coalesce(sum(accepted_chars) FILTER (WHERE coalesce(retained_120s, retained_latest) IS NOT NULL), 0)
         AS BIGINT) AS retained_base_chars
"""


def arm_counts(con: duckdb.DuckDBPyConnection, experiment: str) -> list[ArmCounts]:
    """Per-arm totals of an experiment (what the A/B statistics start from)."""
    outcomes = _experiment_outcomes(con, experiment)
    if outcomes is None:
        return []
    rows = _rows(con, f"WITH o AS ({outcomes}) SELECT arm, {_ARM_AGG} FROM o GROUP BY arm ORDER BY arm", [experiment])
    return [ArmCounts(**r) for r in rows]


def arm_user_counts(con: duckdb.DuckDBPyConnection, experiment: str) -> dict[str | None, list[tuple[int, int]]]:
    """(accepted, shown) per user, per arm: what the clustering correction of the A/B
    statistics needs (users are randomised, suggestions are counted)."""
    outcomes = _experiment_outcomes(con, experiment)
    if outcomes is None:
        return {}
    rows = con.execute(
        f"""WITH o AS ({outcomes})
        SELECT arm, count(*) FILTER (WHERE accepted), count(*) FILTER (WHERE shown)
        FROM o GROUP BY arm, user_id ORDER BY arm""",
        [experiment],
    ).fetchall()
    per_arm: dict[str | None, list[tuple[int, int]]] = {}
    for arm, accepted, shown in rows:
        per_arm.setdefault(arm, []).append((int(accepted), int(shown)))
    return per_arm


def arm_counts_by_day(con: duckdb.DuckDBPyConnection, experiment: str) -> list[ArmDay]:
    """Cumulative per-arm counts at the end of each day (UTC), every arm on every day from
    the experiment's first to its last: one row per daily look of a sequential test."""
    outcomes = _experiment_outcomes(con, experiment)
    if outcomes is None:
        return []
    counted = [f.name for f in fields(ArmCounts) if f.name not in ("arm", "users")]
    cumulative = ",\n".join(f"sum(coalesce(d.{n}, 0)) OVER w AS {n}" for n in counted)
    rows = _rows(
        con,
        f"""
        WITH o AS (SELECT *, CAST(created_at AS DATE) AS day FROM ({outcomes})),
        daily AS (SELECT day, arm, {_ARM_AGG} FROM o GROUP BY ALL),
        newcomers AS (
            SELECT day, arm, count(*) AS users FROM (
                SELECT arm, user_id, min(day) AS day FROM o WHERE user_id IS NOT NULL GROUP BY ALL
            ) GROUP BY ALL
        ),
        grid AS (
            SELECT CAST(unnest(generate_series(min(day), max(day), INTERVAL 1 DAY)) AS DATE) AS day FROM o
        )
        SELECT g.day, a.arm, sum(coalesce(n.users, 0)) OVER w AS users, {cumulative}
        FROM grid g CROSS JOIN (SELECT DISTINCT arm FROM o) a
        LEFT JOIN daily d ON d.day = g.day AND d.arm IS NOT DISTINCT FROM a.arm
        LEFT JOIN newcomers n ON n.day = g.day AND n.arm IS NOT DISTINCT FROM a.arm
        WINDOW w AS (PARTITION BY a.arm ORDER BY g.day ROWS UNBOUNDED PRECEDING)
        ORDER BY g.day, a.arm NULLS LAST
        """,
        [experiment],
    )
    return [ArmDay(**{k: (float(v) if k == "retained_chars" else int(v)) if k not in ("day", "arm") else v
                      for k, v in r.items()}) for r in rows]  # fmt: skip


def completion_owners(con: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, str | None]:
    """user_id of each known id; unknown ids are absent."""
    return _column_by_id(con, ids, "user_id")


def completion_lengths(con: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, int | None]:
    """text_chars of each known id (None: stored without a length); unknown ids are absent."""
    return _column_by_id(con, ids, "text_chars")


def _column_by_id(con: duckdb.DuckDBPyConnection, ids: list[str], column: str) -> dict:
    if not ids:
        return {}
    rows = con.execute(
        f"SELECT id, {column} FROM completions WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(set(ids))]
    ).fetchall()
    return dict(rows)
