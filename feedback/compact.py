"""Rewrite the telemetry database so that deleted rows are gone from the file itself.

DuckDB erases logically: a deleted row, or code set to NULL, stays in the file's freed
blocks until new data happens to reuse them (CHECKPOINT and VACUUM do not overwrite them).
Copying the database into a new file (`COPY FROM DATABASE`: schema, constraints, data) and
putting that in place of the old one leaves only live rows. The caller closes its connection
between `copy_live_rows` and `put_in_place`, and opens the file again after.

A crash midway leaves either the old file (the copy is removed at the next start) or the
new one, never half of either: the rename is atomic.
"""
from __future__ import annotations

import os
from pathlib import Path

import duckdb

_ALIAS = "codeloop_compacted"


def fresh_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".compacting")


def remove_leftover(db_path: Path) -> None:
    """A copy a crash left behind (it holds what the old file held)."""
    for leftover in (fresh_path(db_path), fresh_path(db_path).with_name(fresh_path(db_path).name + ".wal")):
        leftover.unlink(missing_ok=True)


def copy_live_rows(con: duckdb.DuckDBPyConnection, db_path: Path) -> Path:
    """Copy the open database (outside any transaction) into a new file beside it."""
    fresh = fresh_path(db_path)
    remove_leftover(db_path)
    con.execute("CHECKPOINT")  # everything committed is in the file, the write-ahead log empty
    source = con.execute("SELECT current_database()").fetchone()[0]
    try:
        con.execute(f"ATTACH '{_quote(fresh)}' AS {_ALIAS}")
        try:
            con.execute(f'COPY FROM DATABASE "{source}" TO {_ALIAS}')
        finally:
            con.execute(f"DETACH {_ALIAS}")  # checkpoints the copy into its file
    except BaseException:
        remove_leftover(db_path)  # a disk full halfway, say: the old file serves on
        raise
    return fresh


def put_in_place(fresh: Path, db_path: Path) -> None:
    """Replace the (closed) old file with the copy, durably."""
    # Closed right after the CHECKPOINT above with nothing written since: a log left would hold
    # nothing, and replayed onto the new file it would corrupt it.
    Path(str(db_path) + ".wal").unlink(missing_ok=True)
    os.replace(fresh, db_path)
    directory = os.open(db_path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")
