"""`codeloop review create|list|report|close`: blind reviews of two adapters on the running server.

The tasks are cut and answered by trainer/review_tasks.py; the server stores them and serves
the page at /review/ID, where people vote without knowing which adapter wrote which side.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import click

from codeloop.http_api import client, delete_json, exit_for, post_json, require_json
from codeloop.settings import Settings
from codeloop.telemetry_cli import SERVER_OPTION_HELP, format_table


def register(cli: click.Group, load: Callable[..., Settings]) -> None:
    server_option = click.option("--server", "server", help=SERVER_OPTION_HELP)

    @cli.group()
    def review():
        """Blind reviews: people compare two adapters' suggestions without knowing which is which."""

    @review.command("create")
    @click.option("--repo", required=True, type=click.Path(file_okay=False), help="the git repository to take tasks from")
    @click.option("--since", required=True, help="ISO date: lines added by commits from this date on become tasks")
    @click.option("--a", "a", required=True, help="one adapter ('base': the base model)")
    @click.option("--b", "b", required=True, help="the other adapter, e.g. the candidate")
    @click.option("--n", "n", type=click.IntRange(1, 300), default=100, show_default=True, help="tasks at most")
    @click.option("--per-file", type=click.IntRange(1, 1000), default=2, show_default=True, help="tasks at most per file per commit")
    @click.option("--seed", type=int, default=0, show_default=True, help="which lines are picked")
    @click.option("--max-tokens", type=click.IntRange(1, 512), default=64, show_default=True, help="each suggestion's length at most")
    @click.option("--name", help="what reviewers and the report call it (default: 'B vs A' — the page never shows it)")
    @server_option
    @click.option("--quiet", is_flag=True, help="no progress bar")
    def review_create(repo, since, a, b, n, per_file, seed, max_tokens, name, server, quiet):
        """Cut held-out tasks from REPO after --since, ask both adapters, store the review.

        Prints the page's address: share it with the reviewers."""
        from trainer.heldout import held_out_lines
        from trainer.mining import MiningError
        from trainer.review_tasks import create_review
        from codeloop.api_client import ApiError
        from codeloop.names import BASE

        if a == b:
            _fail("--a and --b name the same adapter: a review compares two")
        settings = load()
        where = settings.server(server)
        with client(settings, where.url) as api:
            try:
                if not api.reachable():
                    _fail(where.unreachable())
                known = {x["name"] for x in api.adapters().get("adapters", [])} | {BASE}
                missing = [x for x in (a, b) if x not in known]
                if missing:
                    _fail(f"the server at {where.url} has no adapter {', '.join(map(repr, missing))}; "
                          f"loaded: {', '.join(sorted(known))} (`codeloop adapter add NAME PATH` registers one)")
                try:
                    lines = held_out_lines(Path(repo), since, n=n, per_file=per_file, seed=seed,
                                           config=settings.trainer.mining)
                except (MiningError, ValueError) as exc:
                    _fail(str(exc))
                click.echo(f"{len(lines)} tasks from {repo} since {since}", err=True)
                made = create_review(api, lines, a, b, name=name, repo=str(repo), since=since, max_tokens=max_tokens,
                                     progress=not quiet)
            except ApiError as exc:
                exit_for(exc)
        click.echo(f"review {made['id']}: {made['shown']} tasks to vote on ({made['identical']} identical pairs not shown)")
        click.echo(f"reviewers vote at {where.url.rstrip('/')}{made['url']}")

    @review.command("list")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @server_option
    def review_list(as_json, server):
        """The server's reviews, newest first."""
        settings = load()
        data = require_json(settings, server, "/v1/reviews")
        if as_json:
            click.echo(json.dumps(data, indent=2))
            return
        rows = [r | {"created": datetime.fromtimestamp(r["created_at"], timezone.utc).strftime("%Y-%m-%d %H:%M")}
                for r in data["reviews"]]
        columns = [("id", "id", "{}"), ("name", "name", "{}"), ("status", "status", "{}"), ("created", "created", "{}"),
                   ("shown", "tasks", "{}"), ("voted_tasks", "voted", "{}"), ("votes", "votes", "{}")]
        click.echo(format_table(rows, columns) if rows else "no reviews yet: `codeloop review create` makes one")

    @review.command("report")
    @click.argument("review_id")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @server_option
    def review_report(review_id, as_json, server):
        """Wins, losses and ties per adapter, the win rate with its 95 % interval, a sign test,
        agreement between reviewers, and the automatic scores beside the votes."""
        data = require_json(load(), server, f"/v1/reviews/{review_id}")
        click.echo(json.dumps(data, indent=2) if as_json else format_report(data))

    @review.command("close")
    @click.argument("review_id")
    @server_option
    def review_close(review_id, server):
        """Stop taking votes (a trainer waiting on the review decides with what it has)."""
        data = post_json(load(), server, f"/v1/reviews/{review_id}/close")
        click.echo(f"closed {data['id']}: {data['voted_tasks']} of {data['shown']} tasks voted")

    @review.command("delete")
    @click.argument("review_id")
    @server_option
    def review_delete(review_id, server):
        """Delete a review with its tasks (the repository code and both answers) and its votes."""
        data = delete_json(load(), server, f"/v1/reviews/{review_id}")
        click.echo(f"deleted {data['id']}: {data['tasks']} tasks, {data['votes']} votes")


def format_report(rep: dict) -> str:
    """The report as a few lines and a table, for the terminal."""
    arms = rep["arms"]
    out = [f"review {rep['id']} ({rep['name']}), {rep['status']}: {rep['voted_tasks']} of {rep['shown']} tasks voted, "
           f"{rep['votes']} votes "
           f"({rep['identical']} identical pairs not shown)"]
    rows = [{"side": side, **arm} for side, arm in arms.items()]
    columns = [("side", "side", "{}"), ("adapter", "adapter", "{}"), ("wins", "wins", "{}"),
               ("exact_match", "exact match", "{:.3f}"), ("edit_sim", "edit sim", "{:.3f}"), ("codebleu", "CodeBLEU", "{:.3f}")]
    out.append(format_table(rows, columns))
    out.append(f"ties {rep['ties']}, skipped {rep['skips']}")
    if rep.get("win_rate_b") is not None:
        low, high = rep["win_rate_b_ci"]
        out.append(f"{arms['b']['adapter']} wins {rep['win_rate_b']:.1%} of decided tasks (95% {low:.1%} to {high:.1%}), "
                   f"sign test p = {rep['sign_test_p']:.3g}")
    agreement = rep.get("agreement") or {}
    if agreement.get("tasks"):
        kappa = agreement.get("fleiss_kappa")
        out.append(f"reviewers agree on {agreement['pairwise']:.0%} of pairs of votes over {agreement['tasks']} tasks "
                   f"voted more than once" + (f", Fleiss' kappa {kappa:.2f}" if kappa is not None else ""))
    out.append(f"verdict: {_VERDICTS.get(rep['verdict'], rep['verdict']).format(a=arms['a']['adapter'], b=arms['b']['adapter'])}")
    if rep.get("disagreements"):
        out.append(f"{len(rep['disagreements'])} tasks where people and edit similarity disagree, e.g. "
                   + ", ".join(f"{d['path']}:{d['line']}" for d in rep["disagreements"][:5]))
    return "\n".join(out)


_VERDICTS = {
    "b_better": "{b} is better (sign test p < 0.05)",
    "a_better": "{a} is better (sign test p < 0.05)",
    "no_difference": "no significant difference",
    "too_few_votes": "too few decided tasks to judge yet (10 needed)",
}


def _fail(message: str) -> None:
    click.echo(f"codeloop: {message}", err=True)
    sys.exit(2)
