"""One training run, start to end: mine -> telemetry -> split -> train -> evaluate -> publish.

Everything a run makes lives in its run folder (data_dir/runs/RUN_ID): the dataset, the
checkpoint, the training log, the adapter and run.json (what happened, with figures). A run
started again with the same folder resumes: the saved dataset is reused and training goes on
from the last checkpoint.
"""
from __future__ import annotations

import json
import random
import subprocess
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from codeloop.api_client import ApiClient, ApiError, export_telemetry
from codeloop.names import BASE
from trainer.config import TrainerSettings
from trainer.dataset import SplitData, data_hash, load_examples, save_dataset, split_by_time


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


def run_training(cfg: TrainerSettings, paths: RunPaths, repos: Sequence[Path], api: ApiClient | None, *,
                 publish_action: str | None = None, progress: bool = True,
                 echo: Callable[[str], None] = print) -> RunReport:
    from transformers import AutoConfig, AutoTokenizer

    from trainer.prompts import training_template
    from trainer.publish import next_version, write_adapter
    from trainer.train import result_dict, train_adapter

    run_dir = paths.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    report = RunReport(run_dir.name)
    split = _data(cfg, paths, repos, api, report, progress, echo)
    report.split = split.counts() | {"holdout_from": split.holdout_from, "data_hash": split.data_hash}
    report.save(run_dir)

    tokenizer = AutoTokenizer.from_pretrained(str(paths.model_dir))
    model_type = AutoConfig.from_pretrained(str(paths.model_dir)).model_type
    template = training_template(cfg.train.fim_template, model_type, tokenizer.get_vocab())
    echo(f"training LoRA r={cfg.train.rank} on {len(split.train)} examples (prompt format: {template.name})")
    trained = train_adapter(paths.model_dir, tokenizer, template, split.train, cfg.train, cfg.data, run_dir, progress=progress)
    report.training = result_dict(trained)
    report.save(run_dir)

    state = _server_state(api, report)
    live = state.get("live")
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
        "training": report.training,
    }
    folder = write_adapter(Path(trained.adapter_dir), paths.adapters_dir, name, metadata)
    report.adapter = name
    echo(f"adapter written: {folder}")
    if api is not None and state:
        report.evaluation, report.publish = _evaluate_and_publish(cfg, api, state, name, folder, repos, split,
                                                                  publish_action, progress, echo)
    else:
        report.evaluation = _evaluate_here(cfg, paths, tokenizer, model_type, template, trained, split, progress, echo)
        report.publish = {"action": "not_published", "reason": "no server to publish to; register it with POST /v1/adapters"}
        _record_metrics(folder, report.evaluation)
    echo(f"publish: {report.publish['action']}: {report.publish['reason']}")
    report.status = "done"
    report.save(run_dir)
    return report


def _evaluate_and_publish(cfg: TrainerSettings, api: ApiClient, state: dict, name: str, folder: Path,
                          repos: Sequence[Path], split: SplitData, action: str | None, progress: bool,
                          echo: Callable[[str], None]) -> tuple[dict, dict]:
    """Held-out lines asked through the server, exactly as `codeloop eval` asks them: the
    candidate is registered (hot-loaded) to be asked, and unloaded again if it is not kept."""
    from trainer.heldout import held_out_lines
    from trainer.publish import publish
    from trainer.repo_eval import gate_results, gate_table

    since = datetime.fromtimestamp(split.holdout_from, timezone.utc).isoformat()
    lines = []
    per_repo = -(-cfg.eval.max_examples // max(1, len(repos)))
    for repo in repos:
        try:
            lines += held_out_lines(Path(repo), since, n=per_repo, per_file=cfg.eval.per_file, config=cfg.mining)
        except ValueError:
            pass  # no held-out lines in this repository: the others may have some
    lines = lines[: cfg.eval.max_examples]
    api.register(name, folder)
    models = {BASE: BASE}
    if state.get("live"):
        models["live"] = state["live"]
    models["candidate"] = name
    echo(f"evaluating {', '.join(models)} on {len(lines)} held-out lines through {api.url}")
    results = gate_results(api, lines, models, progress=progress) if lines else {}
    echo(gate_table(results) if results else "no held-out lines to evaluate on")
    _record_metrics(folder, results)  # before publishing: a promote shows codeloop.json as it is then
    decision = publish(api, name, folder, state.get("live"), results or {k: {} for k in models}, cfg.publish,
                       action, registered=True, review=_reviewer(cfg, api, name, lines, progress, echo))
    return results, decision.__dict__


def _reviewer(cfg: TrainerSettings, api: ApiClient, name: str, lines: Sequence, progress: bool,
              echo: Callable[[str], None]) -> Callable[[str], dict]:
    """For `--publish review`: a blind review of the candidate against `control` on the held-out
    lines; waits for the reviewers (trainer.publish.review_wait_s) and returns the report."""
    def review(control: str) -> dict:
        from trainer.review_tasks import create_review, wait_for_verdict

        made = create_review(api, lines[: cfg.publish.review_tasks], control, name, name=f"{name} vs {control}",
                             progress=progress)
        echo(f"blind review {made['id']}: {made['shown']} tasks; reviewers vote at {api.url.rstrip('/')}{made['url']} "
             f"(waiting up to {cfg.publish.review_wait_s / 3600:.0f} h; `codeloop review close {made['id']}` ends it)")
        return wait_for_verdict(api, made["id"], wait_s=cfg.publish.review_wait_s, poll_s=cfg.publish.review_poll_s, echo=echo)

    return review


def _evaluate_here(cfg: TrainerSettings, paths: RunPaths, tokenizer: Any, model_type: str, template: Any, trained: Any,
                   split: SplitData, progress: bool, echo: Callable[[str], None]) -> dict:
    """No server: the held-out examples generated in this process (same templates, no
    post-processing or token healing: an approximation of what the server would answer)."""
    from trainer.evaluate import Candidate, evaluate, table
    from trainer.prompts import serving_template

    vocab = tokenizer.get_vocab()
    candidates = [Candidate(BASE, None, serving_template(None, model_type, vocab, paths.serving_fim_template)),
                  Candidate("candidate", Path(trained.adapter_dir), template)]
    echo(f"evaluating base, candidate in this process on {min(len(split.eval), cfg.eval.max_examples)} held-out examples")
    results = evaluate(paths.model_dir, tokenizer, candidates, split.eval, cfg.eval, cfg.data, progress=progress)
    echo(table(results))
    return results


def _record_metrics(folder: Path, results: dict) -> None:
    """The held-out figures (without the per-example lists) into the adapter's codeloop.json."""
    meta_file = folder / "codeloop.json"
    metadata = json.loads(meta_file.read_text())
    metadata["metrics"] = {label: {k: v for k, v in r.items() if k != "per_example"} for label, r in results.items()}
    tmp = folder / ".codeloop.json.tmp"
    tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True))
    tmp.replace(meta_file)


def _data(cfg: TrainerSettings, paths: RunPaths, repos: Sequence[Path], api: ApiClient | None,
          report: RunReport, progress: bool, echo: Callable[[str], None]) -> SplitData:
    """Mine, read the repositories at the cut, and split; or reuse the dataset a previous
    attempt of this run saved."""
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
    if cfg.data.snapshot:
        examples += _snapshot(cfg, repos, examples, report, echo)
    if cfg.data.telemetry:
        examples += _telemetry(cfg, paths, api, report, echo)
    split = _limit_history(split_by_time(examples, cfg.data), cfg.data.history_share, cfg.train.seed)
    save_dataset(split, saved)
    return split


def _snapshot(cfg: TrainerSettings, repos: Sequence[Path], examples: list, report: RunReport, echo) -> list:
    from trainer.dataset import holdout_cut
    from trainer.snapshot import snapshot_examples

    cut = holdout_cut(examples, cfg.data)
    out = []
    names = {r["path"]: name for name, r in report.mining.get("ranges", {}).items()}
    for repo in repos:
        name = names.get(str(Path(repo).expanduser().resolve()))
        if name is None:
            continue  # no commits mined there
        windows, counts = snapshot_examples(Path(repo), cut, cfg.mining, name=name, window_chars=cfg.data.window_chars,
                                            recent_commits=cfg.data.recent_commits)
        report.mining.setdefault("snapshot", {})[name] = dict(counts)
        out += windows
    echo(f"read the repositor{'y' if len(repos) == 1 else 'ies'} at the hold-out cut: {len(out)} windows of code")
    return out


def _limit_history(split: SplitData, share: float, seed: int) -> SplitData:
    """At most `share` of the training examples from history's hunks when there are windows."""
    files = [e for e in split.train if e.kind == "file"]
    if not files:
        return split
    history = [e for e in split.train if e.kind in ("fim", "function")]
    rest = [e for e in split.train if e.kind not in ("file", "fim", "function")]
    keep = int(share * len(files) / max(1e-9, 1 - share)) if share < 1 else len(history)
    random.Random(seed).shuffle(history)
    split.train = files + history[:keep] + rest
    split.data_hash = data_hash([*split.train, *split.eval])  # what is trained on (and resumed from)
    return split


def _telemetry(cfg: TrainerSettings, paths: RunPaths, api: ApiClient | None, report: RunReport, echo) -> list:
    from trainer.telemetry_data import examples_from_export

    out = paths.run_dir / "telemetry.parquet"
    try:  # the server's export; its file's when no server answers; a refusal is a refusal
        done = export_telemetry(api, out, paths.telemetry_db)
    except Exception as exc:  # telemetry adds to git data; without it the run still trains
        out.unlink(missing_ok=True)  # a partial export is still a copy of users' code
        report.telemetry = {"skipped": f"telemetry export failed: {exc}"}
        echo(f"telemetry skipped: {exc}")
        return []
    if done.read_directly:
        echo(f"telemetry: read {done.source} directly ({done.unreachable})")
    try:
        examples, counts = examples_from_export(out, cfg.data)
    finally:
        # Every user's completions: not kept once read (the examples keep their user, so
        # `codeloop forget` finds them in the run's dataset; SECURITY.md).
        out.unlink(missing_ok=True)
    report.telemetry = {"rows": sum(v for k, v in counts.items() if k != "secrets_scrubbed"), **counts,
                        "source": done.source}
    echo(f"telemetry: {dict(counts)}")
    return examples


def _server_state(api: ApiClient | None, report: RunReport) -> dict[str, Any]:
    if api is None:
        return {}
    try:
        return api.adapters()
    except ApiError as exc:
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
