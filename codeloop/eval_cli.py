"""`codeloop eval`: does an adapter help on my code? Wiring Settings to trainer/repo_eval.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import click

from codeloop.settings import Settings


def register(cli: click.Group, load: Callable[..., Settings]) -> None:
    @cli.command("eval")
    @click.option("--repo", required=True, type=click.Path(file_okay=False), help="the git repository to take held-out lines from")
    @click.option("--since", required=True, help="ISO date: lines added by commits from this date on are asked")
    @click.option("--adapter", "adapters", multiple=True, help="an adapter registered on the server (repeatable); the base model is always asked")
    @click.option("--n", "n", type=click.IntRange(1, 100_000), default=200, show_default=True, help="held-out lines at most")
    @click.option("--per-file", type=click.IntRange(1, 1000), default=2, show_default=True, help="lines at most per file per commit")
    @click.option("--seed", type=int, default=0, show_default=True, help="which lines are picked")
    @click.option("--server", help="the codeloop server (default: trainer.server_url, else the one recorded in data_dir, else host:port)")
    @click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
    @click.option("--context", type=click.Choice(["both", "on", "off"]), default="both", show_default=True,
                  help="ask with the repository context an editor sends (snippets of the files the line's file imports "
                       "and of the files changed with it), without it, or both ways")
    @click.option("--answers", type=click.Path(dir_okay=False), help="also write every answer to this JSON-lines file")
    @click.option("--quiet", is_flag=True, help="no progress bars")
    def eval_(repo, since, adapters, n, per_file, seed, server, as_json, context, answers, quiet) -> None:
        """Ask the running server for lines added to REPO after --since, base vs adapters.

        Prints next-line exact match and edit similarity per model with 95 % bootstrap
        intervals, and each adapter's paired difference with the base (McNemar's exact test).
        """
        from codeloop.snippets import CONTEXT_CHARS
        from trainer.heldout import held_out_lines
        from trainer.mining import MiningError
        from codeloop.names import BASE
        from trainer.repo_eval import format_report, report, run_eval
        from codeloop.api_client import ApiClient, ApiError

        settings = load()
        url = settings.trainer_server_url(server)
        api = ApiClient(url, token=settings.api_token)
        try:
            if not api.reachable():
                _fail(f"no codeloop server answers at {url}: start one with `codeloop serve` (or pass --server URL)")
            known = {a["name"] for a in api.adapters().get("adapters", [])}
            missing = [a for a in adapters if a not in known and a != BASE]
            if missing:
                _fail(f"the server at {url} has no adapter {', '.join(map(repr, missing))}; "
                      f"loaded: {', '.join(sorted(known)) or 'none'} (register one with POST /v1/adapters)")
            try:
                lines = held_out_lines(Path(repo), since, n=n, per_file=per_file, seed=seed, config=settings.trainer.mining,
                                       context_chars=0 if context == "off" else CONTEXT_CHARS)
            except (MiningError, ValueError) as exc:
                _fail(str(exc))
            click.echo(f"{len(lines)} held-out lines from {repo} since {since}", err=True)
            sink = open(answers, "w") if answers else None
            try:
                results = run_eval(api, lines, [BASE, *dict.fromkeys(a for a in adapters if a != BASE)],
                                   contexts={"both": (True, False), "on": (True,), "off": (False,)}[context],
                                   progress=not quiet, on_answer=_answer_writer(sink) if sink else None)
            finally:
                if sink:
                    sink.close()
        except ApiError as exc:
            click.echo(f"codeloop: {exc}", err=True)
            sys.exit(1)
        finally:
            api.close()
        rep = report(results, seed=seed) | {"repo": str(repo), "since": since}
        click.echo(json.dumps(rep, indent=2) if as_json else format_report(rep))


def _answer_writer(sink):
    """One JSON line per answer, flushed: a long evaluation stopped halfway keeps what it asked."""
    def write(model: str, line, text: str) -> None:
        sink.write(json.dumps({"model": model, "path": line.path, "line": line.line, "commit": line.commit,
                               "expected": line.expected, "answer": text}) + "\n")
        sink.flush()

    return write


def _fail(message: str) -> None:
    click.echo(f"codeloop: {message}", err=True)
    sys.exit(2)
