"""Every copy of a user's telemetry under data_dir is reached: forget and retention rewrite the
training runs' datasets and exports (feedback/copies.py), and the database file is rewritten
so that deleted rows leave no bytes behind (feedback/compact.py). Real files throughout: a
DuckDB file from the writer, its Parquet export, a dataset saved by the trainer's own code.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from feedback import copies
from feedback.export import export_file
from feedback.rows import utcnow
from feedback.writer import TelemetryWriter

USER, OTHER = "forget-me-7f3a", "keep-me-2b9c"


def planted(user: str) -> str:
    """A string from this user's code that nothing else contains."""
    return f"planted_{user.replace('-', '_')}_marker"


def files_holding(root: Path, *needles: str) -> list[str]:
    """Every file under root whose bytes contain a needle."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.relative_to(root)}: {n!r}" for n in needles if n.encode() in data]
    return found


def record(writer: TelemetryWriter, user: str, n: int, created_at: datetime | None = None) -> list[str]:
    """n completions of `user`, shown and accepted, with planted code."""
    ids = []
    for i in range(n):
        cid = f"c-{user}-{i}"
        writer.add_completion({"id": cid, "user_id": user, "created_at": created_at or utcnow(), "language": "python",
                               "prefix": f"def f{i}():\n    {planted(user)} = {i}\n    ", "suffix": "\n",
                               "text": f"return {planted(user)}_{i}"})
        at = (created_at or utcnow()) + timedelta(seconds=1)
        writer.add_events([{"completion_id": cid, "kind": "shown", "at": at},
                           {"completion_id": cid, "kind": "accepted", "at": at + timedelta(seconds=1)}]).result(10)
        ids.append(cid)
    return ids


def build_run(data_dir: Path, export: Path) -> Path:
    """What a training run keeps: the dataset built from the export (trainer code), and the
    export itself as a crashed run would leave it."""
    from trainer.config import DataConfig
    from trainer.dataset import SplitData, save_dataset
    from trainer.examples import Example
    from trainer.telemetry_data import examples_from_export

    examples, _ = examples_from_export(export, DataConfig())
    mined = [Example(prefix="a = 1\n", suffix="", middle="b = 2\n", kind="fim", source="repo", path="m.py", commit="abc",
                     time=0.0)]
    run = data_dir / "runs" / "r1"
    save_dataset(SplitData(train=[*examples, *mined], eval=mined, negatives=[], holdout_from=0.0, data_hash=""), run / "dataset")
    (run / "telemetry.parquet").write_bytes(export.read_bytes())  # left by a run killed while reading it
    return run


def dataset_users(run: Path) -> list[str]:
    from trainer.dataset import load_examples

    return sorted(e.user or e.source for e in load_examples(run / "dataset", "train"))


def test_compaction_leaves_no_bytes_of_forgotten_rows_and_the_writer_goes_on(tmp_path):
    db = tmp_path / "telemetry.duckdb"
    with TelemetryWriter(db, flush_interval_s=0.0) as writer:
        record(writer, USER, 3)
        record(writer, OTHER, 2)
        writer.flush(10)
        assert writer.forget_user(USER).result(10).completions == 3
        writer.compact().result(30)
        assert files_holding(tmp_path, USER, planted(USER)) == []
        # Still the same database, still being written.
        record(writer, OTHER + "-2", 1)
        writer.flush(10)
        cursor = writer.reader()
        try:
            users = cursor.execute("SELECT user_id, count(*) FROM completions GROUP BY ALL ORDER BY 1").fetchall()
            outcomes = cursor.execute("SELECT count(*) FROM completion_outcomes WHERE accepted_full").fetchall()
        finally:
            cursor.close()
        assert users == [(OTHER, 2), (OTHER + "-2", 1)] and outcomes == [(3,)]
    assert files_holding(tmp_path, USER, planted(USER)) == []
    assert not list(tmp_path.glob("*.compacting*"))


def test_forget_removes_the_user_from_every_training_copy_and_only_them(tmp_path):
    data = tmp_path / "data"
    with TelemetryWriter(data / "telemetry.duckdb", flush_interval_s=0.0) as writer:
        record(writer, USER, 2)
        record(writer, OTHER, 2)
    export_file(data / "telemetry.duckdb", tmp_path / "export.parquet")
    run = build_run(data, tmp_path / "export.parquet")
    (data / "trainer").mkdir()
    (data / "trainer" / "refresh-export.parquet").write_bytes((tmp_path / "export.parquet").read_bytes())
    assert dataset_users(run) == [USER, USER, OTHER, OTHER, "repo"]  # the user is kept on telemetry examples

    removed = copies.forget_user(data, USER)
    assert removed == 2 + 2 + 2  # dataset examples, the run's export rows, the refresh export's rows
    assert files_holding(data / "runs", USER, planted(USER)) == []
    assert files_holding(data / "trainer", USER, planted(USER)) == []
    assert dataset_users(run) == [OTHER, OTHER, "repo"]
    assert copies.forget_user(data, USER) == 0  # nothing left


def test_expire_removes_old_telemetry_copies_and_keeps_mined_code(tmp_path):
    data = tmp_path / "data"
    old = utcnow() - timedelta(days=40)
    with TelemetryWriter(data / "telemetry.duckdb", flush_interval_s=0.0) as writer:
        record(writer, USER, 2, created_at=old)
        record(writer, OTHER, 1)
    export_file(data / "telemetry.duckdb", tmp_path / "export.parquet")
    run = build_run(data, tmp_path / "export.parquet")

    assert copies.expire(data, utcnow() - timedelta(days=30)) == 2 + 2  # the dataset's and the export's
    assert files_holding(data / "runs", planted(USER)) == []
    assert dataset_users(run) == [OTHER, "repo"]


@pytest.mark.parametrize("name", ["not-ours.parquet", "weights.arrow"])
def test_files_that_are_not_telemetry_are_left_alone(tmp_path, name):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "runs" / name
    path.parent.mkdir(parents=True)
    table = pa.table({"user": [USER], "value": [1]})  # no source/user_id: not a copy of telemetry
    if name.endswith(".parquet"):
        pq.write_table(table, path)
    else:
        path.write_bytes(b"not arrow at all")
    before = path.read_bytes()
    assert copies.forget_user(tmp_path, USER) == 0
    assert path.read_bytes() == before
