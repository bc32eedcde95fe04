"""`codeloop train` and `codeloop refresh`: wiring Settings to trainer/ (the work is there)."""
from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import click

from codeloop.settings import Settings


def register(cli: click.Group, load: Callable[..., Settings], model_dir: Callable[[Settings], Path]) -> None:
    @cli.command()
    @click.option("--repo", "repos", multiple=True, type=click.Path(file_okay=False), help="a git repository to learn from (repeatable)")
    @click.option("--publish", "action", type=click.Choice(["promote", "experiment", "review", "none"]), help="after training (default: trainer.publish.action)")
    @click.option("--no-telemetry", is_flag=True, help="train on git history only")
    @click.option("--max-steps", type=int, help="training step budget (default: trainer.train.max_steps)")
    @click.option("--max-minutes", type=float, help="training time budget in minutes (0 = none)")
    @click.option("--resume", "resume", help="a run id (folder under data_dir/runs) to continue")
    @click.option("--server", help="the codeloop server to publish to (default: trainer.server_url, else the one recorded in data_dir, else host:port)")
    @click.option("--quiet", is_flag=True, help="no progress bars")
    def train(repos, action, no_telemetry, max_steps, max_minutes, resume, server, quiet) -> None:
        """Learn an adapter from git history (and accepted suggestions), evaluate it, publish it."""
        settings = load()
        cfg = settings.trainer.model_copy(deep=True)
        if no_telemetry:
            cfg.data.telemetry = False
        if max_steps is not None:
            cfg.train.max_steps = max_steps
        if max_minutes is not None:
            cfg.train.max_minutes = max_minutes
        if not repos and not resume:
            _fail("give at least one --repo PATH (a git repository), or --resume RUN_ID")
        for repo in repos:  # before a run folder is made for nothing
            if not (Path(repo) / ".git").exists() and not (Path(repo) / "HEAD").is_file():
                _fail(f"--repo {repo}: not a git repository (no {Path(repo) / '.git'})")
        if resume and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", resume):
            _fail(f"--resume {resume!r}: a run id is the name of a folder under data_dir/runs (letters, digits, . _ -)")
        run_id = resume or datetime.now().strftime("%Y%m%d-%H%M%S")
        if resume and not (settings.data_dir / "runs" / resume).is_dir():
            _fail(f"no run {resume!r} under {settings.data_dir / 'runs'}")
        _run(settings, cfg, model_dir(settings), [Path(r) for r in repos], run_id, server, action, quiet)

    @cli.command()
    @click.option("--repo", "repos", multiple=True, type=click.Path(file_okay=False), help="repositories (default: trainer.refresh.repos)")
    @click.option("--force", is_flag=True, help="run even if too little new data arrived")
    @click.option("--every", help="keep running: refresh on this schedule (e.g. 24h, 30m)")
    @click.option("--server", help="the codeloop server (default: trainer.server_url, else the one recorded in data_dir, else host:port)")
    @click.option("--quiet", is_flag=True, help="no progress bars")
    def refresh(repos, force, every, server, quiet) -> None:
        """Retrain when enough new commits or accepted suggestions arrived (safe from cron)."""
        from trainer.refresh import parse_every

        settings = load()
        repos = [Path(r) for r in (repos or settings.trainer.refresh.repos)]
        if not repos:
            _fail("no repositories: give --repo PATH or set trainer.refresh.repos in codeloop.toml")
        try:
            period = parse_every(every) if every else None
        except ValueError as exc:
            _fail(str(exc))
        while True:
            started = time.time()
            _refresh_once(settings, model_dir, repos, force, server, quiet)
            if period is None:
                return
            from trainer.refresh import sleep_until

            click.echo(f"next refresh at {datetime.fromtimestamp(started + period):%Y-%m-%d %H:%M:%S}")
            sleep_until(started + period)
            force = False


def _refresh_once(settings: Settings, model_dir, repos: list[Path], force: bool, server: str | None, quiet: bool) -> None:
    from codeloop.api_client import ApiClient
    from trainer import refresh as rf

    need = settings.trainer.refresh

    def starting(outcome: rf.RefreshOutcome) -> None:
        if outcome.telemetry_note:
            click.echo(f"codeloop: {outcome.telemetry_note}", err=True)
        click.echo(f"refreshing: {outcome.commits} new commits, {outcome.accepted} new accepted suggestions")

    def train(run_id: str) -> None:
        _run(settings, settings.trainer, model_dir(settings), repos, run_id, server, None, quiet)

    try:
        with ApiClient(settings.trainer_server_url(server), token=settings.api_token) as api:
            outcome = rf.refresh_once(settings.data_dir / "trainer", repos, api, need, force=force, train=train, starting=starting)
    except rf.RefreshBusy as exc:
        click.echo(f"codeloop: {exc}")
        return
    except RuntimeError as exc:
        _fail(f"{exc} (is it a git repository?)")
    if not outcome.ran:
        if outcome.telemetry_note:
            click.echo(f"codeloop: {outcome.telemetry_note}", err=True)
        click.echo(f"nothing to do: {outcome.commits} new commits (need {need.min_new_commits}) and {outcome.accepted} new "
                   f"accepted suggestions (need {need.min_new_accepted}); --force runs anyway")


def _run(settings: Settings, cfg, model_dir: Path, repos: list[Path], run_id: str, server: str | None,
         action: str | None, quiet: bool) -> None:
    from trainer.dataset import TooLittleData
    from trainer.mining import MiningError
    from trainer.pipeline import RunPaths, run_training
    from codeloop.api_client import ApiClient, ApiError

    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    paths = RunPaths(model_dir=model_dir, run_dir=settings.data_dir / "runs" / run_id, adapters_dir=settings.adapters_dir,
                     telemetry_db=settings.telemetry_db if settings.telemetry else None,
                     serving_fim_template=settings.fim_template)
    api = ApiClient(settings.trainer_server_url(server), token=settings.api_token)
    click.echo(f"run {run_id}: {paths.run_dir}")
    try:
        report = run_training(cfg, paths, repos, api, publish_action=action, progress=not quiet, echo=click.echo)
    except (MiningError, TooLittleData, ValueError) as exc:
        _fail(str(exc))
    except ApiError as exc:
        click.echo(f"codeloop: {exc}", err=True)
        sys.exit(1)
    finally:
        api.close()
    click.echo(f"run {run_id} done: adapter {report.adapter}, {report.publish['action']}")


def _fail(message: str) -> None:
    click.echo(f"codeloop: {message}", err=True)
    sys.exit(2)
