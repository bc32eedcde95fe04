"""One training run, start to end: mine -> telemetry -> split -> train -> evaluate -> publish.

Everything a run makes lives in its run folder (data_dir/runs/RUN_ID): the dataset, the
checkpoint, the training log, the adapter and run.json (what happened, with figures). A run
started again with the same folder resumes: the saved dataset is reused and training goes on
from the last checkpoint.
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from trainer.config import TrainerSettings
from trainer.dataset import SplitData, data_hash, load_examples, save_dataset, split_by_time
from trainer.server_api import ServerApi, ServerError


@dataclass
class RunPaths:
    model_dir: Path
    run_dir: Path
    adapters_dir: Path
    telemetry_db: Path | None = None  # read when no server answers
    serving_fim_template: str = "auto"  # the server's fim_template setting (how it prompts the base)


@dataclass
class RunReport:
    run_id: str
    status: str = "running"
    mining: dict = field(default_factory=dict)
    telemetry: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    adapter: str | None = None
    publish: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def save(self, run_dir: Path) -> None:
        tmp = run_dir / "run.json.tmp"
        tmp.write_text(json.dumps(self.__dict__, indent=2, default=str))
        tmp.replace(run_dir / "run.json")


def run_training(cfg: TrainerSettings, paths: RunPaths, repos: Sequence[Path], api: ServerApi | None, *,
                 publish_action: str | None = None, progress: bool = True,
                 echo: Callable[[str], None] = print) -> RunReport:
    from transformers import AutoConfig, AutoTokenizer

    from trainer.evaluate import Candidate, evaluate, table
    from trainer.prompts import serving_template, training_template
    from trainer.publish import next_version, publish, write_adapter
    from trainer.train import result_dict, train_adapter

    run_dir = paths.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    report = RunReport(run_dir.name)
    split = _data(cfg, paths, repos, api, report, progress, echo)
    report.split = split.counts() | {"holdout_from": split.holdout_from, "data_hash": split.data_hash}
    report.save(run_dir)

    tokenizer = AutoTokenizer.from_pretrained(str(paths.model_dir))
    model_type = AutoConfig.from_pretrained(str(paths.model_dir)).model_type
    vocab = tokenizer.get_vocab()
    template = training_template(cfg.train.fim_template, model_type, vocab)
    echo(f"training LoRA r={cfg.train.rank} on {len(split.train)} examples (FIM format: {template.name})")
    trained = train_adapter(paths.model_dir, tokenizer, template, split.train, cfg.train, cfg.data, run_dir, progress=progress)
    report.training = result_dict(trained)
    report.save(run_dir)

    state = _server_state(api, report)
    candidates = [Candidate("base", None, serving_template(None, model_type, vocab, paths.serving_fim_template))]
    live = state.get("live")
    if live:
        record = next(a for a in state["adapters"] if a["name"] == live)
        if Path(record["path"]).is_dir():
            candidates.append(Candidate("live", Path(record["path"]),
                                        serving_template(record.get("fim_template"), model_type, vocab, paths.serving_fim_template)))
        else:
            report.notes.append(f"live adapter {live} is not readable here ({record['path']}); compared with the base model")
    candidates.append(Candidate("candidate", Path(trained.adapter_dir), template))
    echo(f"evaluating {', '.join(c.label for c in candidates)} on {min(len(split.eval), cfg.eval.max_examples)} held-out examples")
    results = evaluate(paths.model_dir, tokenizer, candidates, split.eval, cfg.eval, cfg.data, progress=progress)
    report.evaluation = results
    echo(table(results))

    name = f"{cfg.publish.name}@{next_version(cfg.publish.name, [a['name'] for a in state.get('adapters', [])], paths.adapters_dir)}"
    metadata = {
        "fim_template": template.name,
        "base_model": str(paths.model_dir),
        "parent": live,
        "created_at": time.time(),
        "run_id": report.run_id,
        "provenance": {"repositories": report.mining.get("ranges", {}), "data_hash": split.data_hash,
                       "counts": {"mining": report.mining, "telemetry": report.telemetry, "split": report.split},
                       "hyperparameters": {"train": cfg.train.model_dump(), "data": cfg.data.model_dump()},
                       "code_version": code_version()},
        "metrics": results,
        "training": report.training,
    }
    folder = write_adapter(Path(trained.adapter_dir), paths.adapters_dir, name, metadata)
    report.adapter = name
    echo(f"adapter written: {folder}")
    if api is None or not state:
        report.publish = {"action": "not_published", "reason": "no server to publish to; register it with POST /v1/adapters"}
    else:
        decision = publish(api, name, folder, live, results, cfg.publish, publish_action)
        report.publish = decision.__dict__
    echo(f"publish: {report.publish['action']}: {report.publish['reason']}")
    report.status = "done"
    report.save(run_dir)
    return report


def _data(cfg: TrainerSettings, paths: RunPaths, repos: Sequence[Path], api: ServerApi | None,
          report: RunReport, progress: bool, echo: Callable[[str], None]) -> SplitData:
    """Mine and split, or reuse the dataset a previous attempt of this run saved."""
    saved = paths.run_dir / "dataset"
    previous = paths.run_dir / "run.json"
    if saved.is_dir() and previous.is_file():
        old = json.loads(previous.read_text())
        report.mining, report.telemetry = old.get("mining", {}), old.get("telemetry", {})
        train, held = load_examples(saved, "train"), load_examples(saved, "eval")
        echo(f"resuming run {report.run_id}: dataset of {len(train)} training examples reused")
        return SplitData(train, held, load_examples(saved, "negatives"), old["split"]["holdout_from"], data_hash([*train, *held]))
    from trainer.mining import mine_repositories

    echo(f"mining {len(repos)} repositor{'y' if len(repos) == 1 else 'ies'}")
    examples, mining = mine_repositories([Path(r) for r in repos], cfg.mining, progress=progress)
    report.mining = mining.to_dict()
    echo(f"mined {mining.examples} examples from {mining.commits} commits; dropped: {dict(mining.dropped)}")
    if cfg.data.telemetry:
        examples += _telemetry(cfg, paths, api, report, echo)
    split = split_by_time(examples, cfg.data)
    save_dataset(split, saved)
    return split


def _telemetry(cfg: TrainerSettings, paths: RunPaths, api: ServerApi | None, report: RunReport, echo) -> list:
    from trainer.telemetry_data import examples_from_export

    out = paths.run_dir / "telemetry.parquet"
    try:
        if api is not None and api.reachable():
            api.export(out)
        elif paths.telemetry_db is not None and paths.telemetry_db.is_file():
            from feedback.export import export_file

            export_file(paths.telemetry_db, out)
        else:
            report.telemetry = {"skipped": "no server answers and there is no telemetry database"}
            return []
    except Exception as exc:  # telemetry adds to git data; without it the run still trains
        report.telemetry = {"skipped": f"telemetry export failed: {exc}"}
        echo(f"telemetry skipped: {exc}")
        return []
    examples, counts = examples_from_export(out, cfg.data)
    report.telemetry = {"rows": sum(v for k, v in counts.items() if k != "secrets_scrubbed"), **counts}
    echo(f"telemetry: {dict(counts)}")
    return examples


def _server_state(api: ServerApi | None, report: RunReport) -> dict[str, Any]:
    if api is None:
        return {}
    try:
        return api.adapters()
    except ServerError as exc:
        report.notes.append(str(exc))
        return {}


def code_version() -> str:
    """codeloop's version, plus the git commit when run from a checkout."""
    from importlib.metadata import version

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except OSError:
        sha = ""
    return version("codeloop") + (f"+{sha}" if sha else "")
