"""`codeloop serve` on a telemetry file it must not use: a clear message, exit code 2, and
the file byte-for-byte as it was (hashed before and after), before the model is even loaded."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from feedback.db import latest_version, open_db
from tests.faults.conftest import file_digest, remount_read_only


def serve(data_dir: Path, model_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CODELOOP_DATA_DIR": str(data_dir), "CODELOOP_MODEL": str(model_dir),
           "CODELOOP_CONFIG": os.devnull, "CODELOOP_PORT": "9"}  # never bound: it must exit first
    return subprocess.run([sys.executable, "-m", "codeloop.cli", "serve"], env=env, capture_output=True, text=True, timeout=300)


def newer_codeloop_db(path: Path) -> None:
    open_db(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (?, 'from_the_future', TIMESTAMP '2030-01-01')", [latest_version() + 1])
    con.close()


def foreign_db(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE invoices (id INTEGER, total DECIMAL(10, 2))")
    con.execute("INSERT INTO invoices VALUES (1, 9.99)")
    con.close()


MAKERS = {
    "garbage": (lambda p: p.write_bytes(b"not a database at all\n" * 200), "is not a DuckDB database"),
    "foreign": (foreign_db, "is a DuckDB database but not codeloop's"),
    "newer": (newer_codeloop_db, f"created by a newer codeloop (schema {latest_version() + 1}, this one knows {latest_version()}): upgrade codeloop"),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_serve_refuses_a_file_it_must_not_touch(kind, model_dir, tmp_path):
    make, needle = MAKERS[kind]
    data = tmp_path / "data"
    data.mkdir()
    db = data / "telemetry.duckdb"
    make(db)
    before, listing = file_digest(db), sorted(p.name for p in data.iterdir())
    done = serve(data, model_dir, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert needle in done.stderr and str(db) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert file_digest(db) == before
    assert sorted(p.name for p in data.iterdir()) == listing  # no WAL, no temp folder left behind


def test_serve_refuses_an_unwritable_database_and_leaves_it_unchanged(model_dir, tmp_path, mounts):
    """Root ignores file modes, so "unwritable" is a read-only mount: a good codeloop file
    on it, and a data_dir on it with no file yet (nothing can be created)."""
    good = tmp_path / "good.duckdb"
    open_db(good).close()
    ro = mounts("ro", "8m")
    shutil.copyfile(good, ro / "telemetry.duckdb")
    (ro / "empty").mkdir()
    remount_read_only(ro)
    before = file_digest(ro / "telemetry.duckdb")

    done = serve(ro, model_dir, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "cannot open the telemetry database" in done.stderr and "Read-only file system" in done.stderr, done.stderr
    assert "telemetry = false" in done.stderr
    assert file_digest(ro / "telemetry.duckdb") == before
    assert sorted(p.name for p in ro.iterdir()) == ["empty", "telemetry.duckdb"]

    for data in (ro / "empty", ro / "empty" / "sub"):  # the folder exists / must be made
        done = serve(data, model_dir, tmp_path)
        assert done.returncode == 2, done.stderr[-3000:]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        assert "Read-only file system" in done.stderr and str(data) in done.stderr, done.stderr
    assert list((ro / "empty").iterdir()) == []
