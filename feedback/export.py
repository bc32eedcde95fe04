"""Parquet export of completions joined with their outcomes, for the trainer.

One row per completion: every completions column plus shown, accepted, partial,
partial_chars (largest partial accept), accepted_chars, rejected, dismissed, cancelled,
final_kind and retained_30s / retained_120s / retained_600s (definitions: outcomes.py).
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import duckdb

from .db import open_db
from .outcomes import OUTCOME_COLUMNS, created_bound, outcome_select, outcomes_sql, sql_timestamp
from .rows import COMPLETION_COLUMNS

# The outcome columns exported (retained_latest / retained_best are for logs, not training).
EXPORT_OUTCOMES = tuple(c for c in OUTCOME_COLUMNS if c not in ("retained_latest", "retained_best"))


def export_parquet(con: duckdb.DuckDBPyConnection, out_path: Path | str, since: datetime | None = None) -> int:
    """Write completions created at or after `since` (all when None), oldest first, to
    `out_path`; return the number of rows. Works on a reader cursor of a running writer."""
    out_path = Path(out_path)
    where, outcomes_where = "TRUE", "TRUE"
    if since is not None:
        where, outcomes_where = f"c.created_at >= {sql_timestamp(since)}", created_bound(since)
    selected = ", ".join([*(f"c.{c}" for c in COMPLETION_COLUMNS), *(outcome_select(c) for c in EXPORT_OUTCOMES)])
    # Written beside the target, then renamed: a reader never sees half a file.
    partial = out_path.with_name(f".{out_path.name}.partial")
    target = str(partial).replace("'", "''")  # COPY takes no parameter for its path
    query = (
        f"SELECT {selected} FROM completions c LEFT JOIN ({outcomes_sql(outcomes_where)}) o "
        f"ON o.completion_id = c.id WHERE {where} ORDER BY c.created_at, c.id"
    )
    try:
        count = con.execute(
            f"COPY ({query}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)"
        ).fetchall()[0][0]
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    return int(count)


def export_file(db_path: Path | str, out_path: Path | str, since: datetime | None = None) -> int:
    """export_parquet straight from a database file, opened read-only (no server running:
    while one runs it holds the file; use GET /v1/feedback/export instead)."""
    con = open_db(Path(db_path), read_only=True)
    try:
        return export_parquet(con, out_path, since)
    finally:
        con.close()
