"""open_db: creation, numbered migrations, and the files it must refuse without touching."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import feedback.db as db
from feedback.db import TelemetryDBError, latest_version, open_db

from .conftest import file_digest

TABLES = {"schema_version", "completions", "events", "completion_outcomes", "experiments", "reviews", "review_tasks",
          "review_votes"}


def tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT internal").fetchall()}


def versions(con: duckdb.DuckDBPyConnection) -> list[int]:
    return [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]


def test_creates_migrates_once_and_reopen_is_a_no_op(db_path: Path) -> None:
    con = open_db(db_path)
    assert tables(con) == TABLES
    assert versions(con) == list(range(1, latest_version() + 1))
    applied_at = con.execute("SELECT applied_at FROM schema_version").fetchall()
    con.execute("INSERT INTO experiments (id) VALUES ('keep-me')")
    con.close()

    con = open_db(db_path)  # a second open applies nothing and keeps the data
    assert versions(con) == list(range(1, latest_version() + 1))
    assert con.execute("SELECT applied_at FROM schema_version").fetchall() == applied_at
    assert con.execute("SELECT id FROM experiments").fetchall() == [("keep-me",)]
    con.close()

    ro = open_db(db_path, read_only=True)
    assert ro.execute("SELECT count(*) FROM completions").fetchall() == [(0,)]
    with pytest.raises(duckdb.Error):
        ro.execute("INSERT INTO experiments (id) VALUES ('no')")
    ro.close()


def test_creates_missing_directories_and_accepts_an_empty_file(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b" / "telemetry.duckdb"
    open_db(nested).close()
    assert versions(duckdb.connect(str(nested), read_only=True)) == list(range(1, latest_version() + 1))

    empty = tmp_path / "touched.duckdb"
    empty.touch()  # zero bytes: nothing to lose, so it is initialised
    open_db(empty).close()
    blank_duckdb = tmp_path / "blank.duckdb"
    duckdb.connect(str(blank_duckdb)).close()  # a DuckDB file without any table
    con = open_db(blank_duckdb)
    assert tables(con) == TABLES
    con.close()


def test_numbered_migrations_apply_in_order_and_only_the_new_ones(tmp_path: Path, monkeypatch) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_initial.sql").write_text((db.MIGRATIONS_DIR / "0001_initial.sql").read_text())
    monkeypatch.setattr(db, "MIGRATIONS_DIR", migrations)
    path = tmp_path / "t.duckdb"
    open_db(path).close()

    (migrations / "0002_notes.sql").write_text("CREATE TABLE notes (body VARCHAR);")
    with pytest.raises(TelemetryDBError, match="schema 1 but this codeloop needs 2"):
        open_db(path, read_only=True)  # read-only cannot migrate: says how to
    con = open_db(path)
    assert versions(con) == [1, 2] and "notes" in tables(con)
    con.close()

    # A failing migration is rolled back whole: the version stays, the table never appears.
    (migrations / "0003_broken.sql").write_text("CREATE TABLE half (a INT); SELECT * FROM no_such_table;")
    with pytest.raises(TelemetryDBError, match="migration 0003_broken failed"):
        open_db(path)
    con = duckdb.connect(str(path), read_only=True)
    assert versions(con) == [1, 2] and "half" not in tables(con)
    con.close()

    (migrations / "0005_gap.sql").write_text("SELECT 1;")
    with pytest.raises(TelemetryDBError, match="without gaps"):
        open_db(path)


def test_schema_1_upgrades_without_the_unused_tables_and_keeps_experiments(tmp_path: Path, monkeypatch) -> None:
    """0002 drops `adapters` and `train_runs` (never written; codeloop.json and run.json hold
    that); an experiment saved under schema 1 survives the upgrade."""
    first_only = tmp_path / "migrations"
    first_only.mkdir()
    (first_only / "0001_initial.sql").write_text((db.MIGRATIONS_DIR / "0001_initial.sql").read_text())
    path = tmp_path / "old.duckdb"
    with monkeypatch.context() as m:
        m.setattr(db, "MIGRATIONS_DIR", first_only)
        con = open_db(path)
        assert {"adapters", "train_runs"} <= tables(con)
        con.execute("INSERT INTO experiments (id, name) VALUES ('exp-1', 'kept')")
        con.close()
    con = open_db(path)
    assert tables(con) == TABLES and versions(con) == list(range(1, latest_version() + 1))
    assert con.execute("SELECT name FROM experiments").fetchall() == [("kept",)]
    con.close()


def test_schema_2_upgrades_with_context_columns_and_keeps_its_rows(tmp_path: Path, monkeypatch) -> None:
    """0003 adds how much repository context each completion had; older rows read as none."""
    two = tmp_path / "migrations"
    two.mkdir()
    for name in ("0001_initial.sql", "0002_drop_unused_tables.sql"):
        (two / name).write_text((db.MIGRATIONS_DIR / name).read_text())
    path = tmp_path / "old.duckdb"
    with monkeypatch.context() as m:
        m.setattr(db, "MIGRATIONS_DIR", two)
        con = open_db(path)
        con.execute("INSERT INTO completions (id, created_at) VALUES ('cmpl-old', now())")
        con.close()
    con = open_db(path)
    assert versions(con)[-1] >= 3
    assert con.execute("SELECT id, context_snippets, context_tokens FROM completions").fetchall() == [("cmpl-old", None, None)]
    assert "context_snippets" in {r[0] for r in con.execute("DESCRIBE completion_outcomes").fetchall()}
    con.close()


def test_schema_3_upgrades_with_the_review_tables_and_keeps_its_rows(tmp_path: Path, monkeypatch) -> None:
    """0004 adds blind review (reviews, their tasks, the votes); telemetry from before stays."""
    three = tmp_path / "migrations"
    three.mkdir()
    for name in ("0001_initial.sql", "0002_drop_unused_tables.sql", "0003_context_columns.sql"):
        (three / name).write_text((db.MIGRATIONS_DIR / name).read_text())
    path = tmp_path / "old.duckdb"
    with monkeypatch.context() as m:
        m.setattr(db, "MIGRATIONS_DIR", three)
        con = open_db(path)
        assert "reviews" not in tables(con)
        con.execute("INSERT INTO completions (id, created_at, context_snippets) VALUES ('cmpl-3', now(), 2)")
        con.execute("INSERT INTO experiments (id, name) VALUES ('exp-3', 'kept')")
        con.close()
    con = open_db(path)
    assert tables(con) == TABLES and versions(con)[:4] == [1, 2, 3, 4]
    assert con.execute("SELECT id, context_snippets FROM completions").fetchall() == [("cmpl-3", 2)]
    assert con.execute("SELECT name FROM experiments").fetchall() == [("kept",)]
    con.execute("INSERT INTO reviews VALUES ('rev-1', 'b vs a', 'base', 'b@1', NULL, NULL, now(), 'open')")
    con.execute("INSERT INTO review_votes VALUES ('rev-1', 1, 'alice', 'a', now())")
    with pytest.raises(duckdb.ConstraintException):  # one vote per reviewer and task
        con.execute("INSERT INTO review_votes VALUES ('rev-1', 1, 'alice', 'b', now())")
    con.close()


def test_refuses_a_newer_schema_and_leaves_the_file_unchanged(db_path: Path) -> None:
    open_db(db_path).close()
    con = duckdb.connect(str(db_path))
    con.execute("INSERT INTO schema_version VALUES (99, 'future', TIMESTAMP '2030-01-01')")
    con.close()
    before = file_digest(db_path)
    for read_only in (False, True):
        with pytest.raises(TelemetryDBError, match=rf"created by a newer codeloop \(schema 99, this one knows {latest_version()}\): upgrade codeloop"):
            open_db(db_path, read_only=read_only)
    assert file_digest(db_path) == before
    assert not Path(str(db_path) + ".wal").exists()


def test_refuses_a_foreign_duckdb_file_and_leaves_it_unchanged(db_path: Path) -> None:
    con = duckdb.connect(str(db_path))
    con.execute("CREATE TABLE invoices (id INT, total DECIMAL(10, 2))")
    con.execute("INSERT INTO invoices VALUES (1, 9.99)")
    con.close()
    before = file_digest(db_path)
    with pytest.raises(TelemetryDBError, match="not codeloop's.*invoices"):
        open_db(db_path)
    assert file_digest(db_path) == before


@pytest.mark.parametrize("content", [b"hello, not a database\n" * 50, b"\x00" * 4096, b"DUCK"])
def test_refuses_a_file_that_is_not_duckdb_and_leaves_it_unchanged(db_path: Path, content: bytes) -> None:
    db_path.write_bytes(content)
    for read_only in (False, True):
        with pytest.raises(TelemetryDBError, match="not a DuckDB database"):
            open_db(db_path, read_only=read_only)
    assert db_path.read_bytes() == content
    assert sorted(p.name for p in db_path.parent.iterdir()) == [db_path.name]


def test_unusable_paths_give_clear_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(TelemetryDBError, match="cannot create the telemetry database"):
        open_db(blocker / "telemetry.duckdb")
    with pytest.raises(TelemetryDBError, match="is a directory"):
        open_db(tmp_path)
    with pytest.raises(TelemetryDBError, match="no telemetry database at"):
        open_db(tmp_path / "missing.duckdb", read_only=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_gives_a_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(TelemetryDBError, match="cannot create the telemetry database"):
            open_db(locked / "telemetry.duckdb")
    finally:
        locked.chmod(0o755)


def test_a_file_held_by_another_process_is_reported_as_in_use(db_path: Path) -> None:
    open_db(db_path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); time.sleep(60)",
         str(db_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(TelemetryDBError, match="in use by another process.*codeloop serve"):
            open_db(db_path, read_only=True)
    finally:
        holder.kill()
        holder.wait()
