"""The inserts the writer makes, inside its transaction.

Events carry no PRIMARY KEY (see migrations/0001_initial.sql); they are de-duplicated
here by (completion_id, kind, "at"). That is race-free because one writer thread inserts.
Every insert also keeps completion_outcomes current (see outcomes.py).
"""
from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa

from .outcomes import COPIED_COLUMNS, merge_outcomes, sql_timestamp
from .rows import COMPLETION_COLUMNS, EVENT_COLUMNS

_COMPLETION_COLS = ", ".join(COMPLETION_COLUMNS)
_EVENT_COLS = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
_COPIED = ", ".join(COPIED_COLUMNS)
# Split the batch's "at" values into at most this many ranges: each range is one zone-map
# filter, and a spool replay of old events should not widen the scan to the whole table.
MAX_RANGES = 32
_MIN_GAP = timedelta(minutes=1)


def insert_completions(con: duckdb.DuckDBPyConnection, table: pa.Table) -> int:
    """Insert completion rows (a re-sent id is ignored) and their outcome rows."""
    if table.num_rows == 0:
        return 0
    con.register("_cl_completions", table)
    try:
        inserted = con.sql(
            f"""
            INSERT OR IGNORE INTO completions ({_COMPLETION_COLS})
            SELECT {_COMPLETION_COLS} FROM _cl_completions QUALIFY row_number() OVER (PARTITION BY id) = 1
            RETURNING id AS completion_id, {_COPIED}
            """
        ).to_arrow_table()
    finally:
        con.unregister("_cl_completions")
    if inserted.num_rows:
        con.register("_cl_inserted", inserted)
        try:
            con.execute(f"INSERT INTO completion_outcomes (completion_id, {_COPIED}) SELECT * FROM _cl_inserted")
        finally:
            con.unregister("_cl_inserted")
    return inserted.num_rows


def at_ranges(ats: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Cover the values with few [lo, hi] ranges, splitting at the widest gaps."""
    values = sorted(set(ats))
    if not values:
        return []
    gaps = sorted(
        ((values[i + 1] - values[i], i) for i in range(len(values) - 1) if values[i + 1] - values[i] > _MIN_GAP),
        reverse=True,
    )[: MAX_RANGES - 1]
    cuts = sorted(i for _, i in gaps)
    ranges, start = [], 0
    for i in cuts:
        ranges.append((values[start], values[i]))
        start = i + 1
    ranges.append((values[start], values[-1]))
    return ranges


def insert_events(
    con: duckdb.DuckDBPyConnection,
    table: pa.Table,
    ats: list[datetime],
    requests: int,
    created: dict[str, datetime] | None = None,
) -> list[int]:
    """Insert the events that are not stored yet; return the new-row count per request.

    `table` is `rows.events_table(...)` (with `_req`), `ats` its "at" column as datetimes,
    `created` the created_at of the completions the caller knows (the others are looked
    up). Within the batch the first copy of a key wins, so the same event sent twice in one
    call or in two calls of one batch is stored once and counted once.
    """
    counts = [0] * requests
    if table.num_rows == 0:
        return counts
    where = " OR ".join(f'("at" BETWEEN {sql_timestamp(lo)} AND {sql_timestamp(hi)})' for lo, hi in at_ranges(ats))
    con.register("_cl_events", table)
    try:
        new = con.sql(
            f"""
            SELECT b.* FROM (
                SELECT * FROM _cl_events
                QUALIFY row_number() OVER (PARTITION BY completion_id, kind, "at" ORDER BY _req) = 1
            ) b
            ANTI JOIN (SELECT completion_id, kind, "at" FROM events WHERE {where}) e
            USING (completion_id, kind, "at")
            """
        ).to_arrow_table()
    finally:
        con.unregister("_cl_events")
    if new.num_rows == 0:
        return counts
    con.register("_cl_new_events", new)
    try:
        con.execute(f"INSERT INTO events ({_EVENT_COLS}) SELECT {_EVENT_COLS} FROM _cl_new_events")
        oldest = _oldest_completion(con, new.column("completion_id").unique().to_pylist(), created or {})
        if oldest is not None:  # None: no event refers to a stored completion
            merge_outcomes(con, "_cl_new_events", oldest)
    finally:
        con.unregister("_cl_new_events")
    per_request = np.bincount(new.column("_req").to_numpy(), minlength=requests)
    return [int(n) for n in per_request]


def _oldest_completion(con: duckdb.DuckDBPyConnection, ids: list[str], created: dict[str, datetime]) -> datetime | None:
    known = [created[i] for i in ids if i in created]
    missing = [i for i in ids if i not in created]
    if missing:  # a primary-key lookup each
        found = con.execute(
            "SELECT min(created_at) FROM completions WHERE id IN (SELECT unnest(?::VARCHAR[]))", [missing]
        ).fetchall()[0][0]
        if found is not None:
            known.append(found)
    return min(known, default=None)
