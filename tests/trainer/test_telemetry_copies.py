"""A training run keeps no export of everyone's completions: it reads it, builds examples that
carry their user (so that `codeloop forget` finds them in the run's dataset), and deletes it."""
from __future__ import annotations

from feedback.writer import TelemetryWriter
from tests.feedback.test_copies import OTHER, USER, files_holding, planted, record
from trainer.config import TrainerSettings
from trainer.pipeline import RunPaths, RunReport, _telemetry


def test_a_run_deletes_its_telemetry_export_once_read_and_keeps_the_user_on_examples(tmp_path):
    db = tmp_path / "telemetry.duckdb"
    with TelemetryWriter(db, flush_interval_s=0.0) as writer:
        record(writer, USER, 2)
        record(writer, OTHER, 1)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    paths = RunPaths(model_dir=tmp_path, run_dir=run, adapters_dir=tmp_path / "adapters", telemetry_db=db)
    report = RunReport("r1")

    examples = _telemetry(TrainerSettings(), paths, None, report, echo=lambda line: None)
    assert sorted(e.user for e in examples) == [USER, USER, OTHER] and report.telemetry["accepted"] == 3
    assert list(run.iterdir()) == []  # the export is gone
    assert files_holding(run, USER, planted(USER)) == []
