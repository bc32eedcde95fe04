"""Open the telemetry database, creating or migrating it (numbered SQL files, as in `llm`).

A file we refuse (not DuckDB, someone else's DuckDB, a newer codeloop's) is only ever
opened read-only, so it is left byte-for-byte as it was.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")
# DuckDB's header: 8 bytes of checksum, then the magic bytes.
_DUCKDB_MAGIC = b"DUCK"

# The migration runner's own table: created with the first migration, in its transaction.
_SCHEMA_VERSION_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL
)"""


class TelemetryDBError(Exception):
    """The telemetry database cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(directory: Path | None = None) -> list[Migration]:
    """The numbered SQL files, in order (MIGRATIONS_DIR unless told otherwise)."""
    found: list[Migration] = []
    for path in sorted((directory or MIGRATIONS_DIR).glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise TelemetryDBError(f"badly named migration {path.name} (want NNNN_name.sql)")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise TelemetryDBError(f"migrations must be numbered 1, 2, 3… without gaps, found {versions}")
    return found


def latest_version() -> int:
    return len(migrations())


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        message = str(exc)
        if "lock" in message.lower():
            raise TelemetryDBError(
                f"{path} is in use by another process ({message}). Only one process may open it "
                "for writing: while `codeloop serve` runs, read through its HTTP API "
                "(e.g. GET /v1/feedback/export)."
            ) from exc
        if "different configuration" in message:
            raise TelemetryDBError(
                f"{path} is already open in this process (a TelemetryWriter, or cursors still "
                "referenced from a closed one): use writer.reader() or close them first"
            ) from exc
        if "not a valid DuckDB database" in message:
            raise TelemetryDBError(f"{path} is not a DuckDB database; refusing to touch it") from exc
        verb = "open" if path.exists() else "create"
        hint = ""
        if not read_only and ("Read-only file system" in message or "Permission denied" in message):
            hint = (f". codeloop must write it and a .wal file next to it: make {path.parent} writable, "
                    "point data_dir elsewhere, or set telemetry = false")
        raise TelemetryDBError(f"cannot {verb} the telemetry database {path}: {message}{hint}") from exc


def _user_objects(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND NOT internal "
        "UNION ALL SELECT view_name FROM duckdb_views() WHERE database_name = current_database() AND NOT internal"
    ).fetchall()
    return sorted(r[0] for r in rows)


def applied_versions(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Versions recorded in schema_version; [] for an empty DuckDB file."""
    objects = _user_objects(con)
    if "schema_version" not in objects:
        return []
    return [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]


def _inspect(path: Path, known: int) -> int:
    """Check an existing file without writing to it; return its schema version."""
    with open(path, "rb") as f:
        header = f.read(12)
    if header[8:12] != _DUCKDB_MAGIC:
        raise TelemetryDBError(f"{path} is not a DuckDB database; refusing to touch it")
    con = _connect(path, read_only=True)
    try:
        objects = _user_objects(con)
        versions = applied_versions(con)
    finally:
        con.close()
    if not versions:
        if objects:
            shown = ", ".join(objects[:5]) + ("…" if len(objects) > 5 else "")
            raise TelemetryDBError(
                f"{path} is a DuckDB database but not codeloop's (it has tables {shown} and no "
                "schema_version); refusing to touch it. Point codeloop at another file."
            )
        return 0
    version = max(versions)
    if version > known:
        raise TelemetryDBError(
            f"{path} was created by a newer codeloop (schema {version}, this one knows {known}): upgrade codeloop"
        )
    return version


def open_db(path: Path | str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (creating and migrating when writable) the telemetry database at `path`."""
    path = Path(path)
    all_migrations = migrations()
    known = len(all_migrations)
    if path.is_dir():
        raise TelemetryDBError(f"{path} is a directory, not a database file")
    if path.exists() and path.stat().st_size > 0:
        version = _inspect(path, known)
    elif read_only:
        raise TelemetryDBError(f"no telemetry database at {path}")
    else:
        # A zero-byte file (touch, mkstemp) holds nothing to lose: start it afresh, as
        # DuckDB itself refuses to open one.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise TelemetryDBError(f"cannot create the telemetry database {path}: {exc}") from exc
        version = 0
    if read_only:
        if version < known:
            raise TelemetryDBError(
                f"{path} has schema {version} but this codeloop needs {known}; open it once read-write "
                "(start `codeloop serve`) to migrate it"
            )
        return _connect(path, read_only=True)
    con = _connect(path, read_only=False)
    try:
        _migrate(con, all_migrations[version:])
    except BaseException:
        con.close()
        raise
    return con


def _migrate(con: duckdb.DuckDBPyConnection, pending: list[Migration]) -> None:
    # One transaction per migration: a failure leaves the database at the previous version.
    for migration in pending:
        con.execute("BEGIN")
        try:
            con.execute(_SCHEMA_VERSION_DDL)
            con.execute(migration.sql)
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                [migration.version, migration.name, datetime.now(timezone.utc).replace(tzinfo=None)],
            )
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.abort()
            con.execute("ROLLBACK")
            raise TelemetryDBError(f"migration {migration.version:04d}_{migration.name} failed: {exc}") from exc


def reopen_db(path: Path | str) -> duckdb.DuckDBPyConnection:
    """Reconnect to a database this process already opened and migrated (after DuckDB
    invalidated the instance on a fatal IO error). Skips the read-only inspection, which
    DuckDB refuses while the old read-write instance lingers."""
    path = Path(path)
    con = _connect(path, read_only=False)
    try:
        version = max(applied_versions(con), default=0)
        if version != latest_version():
            raise TelemetryDBError(f"{path} changed under us: schema {version}, expected {latest_version()}")
    except BaseException:
        con.close()
        raise
    return con
