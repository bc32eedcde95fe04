"""Parquet export: one row per completion with its outcomes, read back with DuckDB."""
from __future__ import annotations

from contextlib import closing
from pathlib import Path

import duckdb
import pytest

from feedback.db import TelemetryDBError
from feedback.export import EXPORT_OUTCOMES, export_file, export_parquet
from feedback.rows import COMPLETION_COLUMNS
from feedback.writer import TelemetryWriter

from .dataset import D2, load


def read(path: Path) -> tuple[list[str], dict[str, dict]]:
    con = duckdb.connect()
    cursor = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
    names = [d[0] for d in cursor.description]
    rows = {r[0]: dict(zip(names, r)) for r in cursor.fetchall()}
    con.close()
    return names, rows


def test_export_round_trip(writer: TelemetryWriter, tmp_path: Path) -> None:
    load(writer)
    out = tmp_path / "it's here" / "feedback.parquet"  # a quote in the path must not break COPY
    out.parent.mkdir()
    with closing(writer.reader()) as cursor:
        assert export_parquet(cursor, out) == 6
    names, rows = read(out)
    assert names == [*COMPLETION_COLUMNS, *EXPORT_OUTCOMES]
    assert list(rows) == ["c1", "c2", "c3", "c4", "c5", "c6"]  # oldest first
    pick = lambda cid, *cols: tuple(rows[cid][c] for c in cols)  # noqa: E731
    cols = ("shown", "accepted", "partial", "partial_chars", "accepted_chars", "rejected", "final_kind")
    assert pick("c1", *cols) == (True, True, False, None, 10, False, "accepted")
    assert pick("c2", *cols) == (True, True, True, 8, 8, False, "partial")
    assert pick("c3", *cols) == (True, False, False, None, 0, True, "rejected")
    assert pick("c4", *cols) == (False, False, False, None, 0, False, None)
    assert pick("c1", "retained_30s", "retained_120s", "retained_600s") == (1.0, 0.5, 0.2)
    assert pick("c5", "retained_30s", "retained_120s") == (0.9, None)
    assert pick("c2", "text", "prefix", "text_chars") == ("x" * 20, "def f():\n    ", 20)  # code for training
    assert [p.name for p in out.parent.iterdir()] == ["feedback.parquet"]  # no partial file left

    with closing(writer.reader()) as cursor:
        assert export_parquet(cursor, tmp_path / "recent.parquet", since=D2) == 2
    assert list(read(tmp_path / "recent.parquet")[1]) == ["c5", "c6"]


def test_export_file_reads_a_database_no_server_holds(db_path: Path, tmp_path: Path) -> None:
    with TelemetryWriter(db_path, flush_interval_s=0) as writer:
        load(writer)
        with pytest.raises(TelemetryDBError, match="already open in this process"):
            export_file(db_path, tmp_path / "x.parquet")
    assert export_file(db_path, tmp_path / "all.parquet") == 6
    assert export_file(db_path, tmp_path / "recent.parquet", since=D2) == 2
    assert read(tmp_path / "all.parquet")[1]["c2"]["accepted_chars"] == 8
