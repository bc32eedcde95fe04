"""Copies of telemetry outside the database: what `forget` and `retention_days` reach there.

The trainer copies telemetry into data_dir: an export (Parquet, every user's completions)
while it builds examples, and the examples themselves in a run's saved dataset (Arrow files
written by `datasets`, one per split, with the user on each telemetry example). The trainer
deletes an export once its examples are built, but a run killed in between leaves one, and
`codeloop export` may have been pointed into data_dir. So forgetting a user, or expiring old
code, rewrites every such file under data_dir without the rows concerned:

- a telemetry export (it has `user_id` and `created_at` columns): the user's rows, or the
  rows created before the cut;
- a dataset split (it has `source`, `user` and `time` columns): the user's telemetry
  examples, or those made before the cut. A split saved before examples carried their user
  loses all its telemetry examples when someone is forgotten, as it cannot tell whose they are.

Mined examples (from git) are not telemetry and stay. A file is replaced whole (written
beside, then renamed), so a reader never sees half of one.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger("codeloop.feedback")
TELEMETRY_SOURCE = "telemetry"  # Example.source of examples made from telemetry
_SKIPPED_DIRS = ("models", "adapters")  # weights only: nothing there is a table of telemetry

_lock = threading.Lock()  # one rewrite at a time (a forget and the retention job may overlap)
Keep = Callable[[pa.Table], pa.Array | None]  # the rows to keep; None: the file is none of ours


def forget_user(data_dir: Path, user: str) -> int:
    """Remove the user's rows from every copy under data_dir; how many rows went."""

    def keep(table: pa.Table) -> pa.Array | None:
        names = table.column_names
        if "user_id" in names:  # an export
            return pc.fill_null(pc.not_equal(table["user_id"], user), True)
        if "source" not in names:
            return None
        telemetry = pc.equal(table["source"], TELEMETRY_SOURCE)
        mine = pc.and_(telemetry, pc.equal(table["user"], user)) if "user" in names else telemetry
        return pc.invert(pc.fill_null(mine, False))

    return _rewrite_all(data_dir, keep)


def expire(data_dir: Path, before: datetime) -> int:
    """Remove telemetry created before `before` (naive UTC) from every copy; how many rows went."""
    cut = before.replace(tzinfo=timezone.utc)

    def keep(table: pa.Table) -> pa.Array | None:
        names = table.column_names
        if "user_id" in names and "created_at" in names:
            stamps = table["created_at"]
            bound = pa.scalar(cut.replace(tzinfo=None) if stamps.type.tz is None else cut, stamps.type)
            return pc.fill_null(pc.greater_equal(stamps, bound), False)
        if "source" not in names or "time" not in names:
            return None
        old = pc.and_(pc.equal(table["source"], TELEMETRY_SOURCE), pc.less(table["time"], cut.timestamp()))
        return pc.invert(pc.fill_null(old, False))

    return _rewrite_all(data_dir, keep)


def _tables(data_dir: Path) -> Iterator[Path]:
    for path in sorted(data_dir.rglob("*")):
        relative = path.relative_to(data_dir).parts
        if relative[0] in _SKIPPED_DIRS or path.suffix not in (".parquet", ".arrow") or not path.is_file():
            continue
        yield path


def _rewrite_all(data_dir: Path, keep: Keep) -> int:
    removed = 0
    with _lock:
        for path in _tables(data_dir):
            try:
                removed += _rewrite(path, keep)
            except (OSError, pa.ArrowException) as exc:  # not ours, or unreadable: say so, go on
                log.warning("could not check %s for telemetry: %s", path, exc)
    return removed


def _rewrite(path: Path, keep: Keep) -> int:
    parquet = path.suffix == ".parquet"
    table = pq.read_table(path) if parquet else _read_arrow(path)
    mask = keep(table)
    if mask is None:
        return 0
    kept = table.filter(mask)
    if kept.num_rows == table.num_rows:
        return 0
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if parquet:
            pq.write_table(kept, tmp)
        else:
            # The IPC stream format `datasets` writes; the schema keeps its metadata (the features).
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(kept)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a half-written copy would be one more copy
    log.info("removed %d telemetry rows from %s", table.num_rows - kept.num_rows, path)
    return table.num_rows - kept.num_rows


def _read_arrow(path: Path) -> pa.Table:
    with pa.OSFile(str(path), "rb") as source:
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_file(source).read_all()
