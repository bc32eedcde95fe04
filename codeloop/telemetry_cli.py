"""`codeloop stats`, `logs`, `export` and `forget`: over HTTP when the server runs,
straight from the DuckDB file when it does not (DuckDB lets only one process open it)."""
from __future__ import annotations

import json
from dataclasses import asdict
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import click

from codeloop.api_client import ApiError, NoTelemetry, export_telemetry
from codeloop.http_api import client, exit_for, get_json
from codeloop.settings import Settings

SERVER_OPTION_HELP = "server URL (default: the server recorded in data_dir, else settings host/port)"
# As the user field of a completion request (server/schemas.py).
MAX_USER_CHARS = 200

STATS_COLUMNS = [
    ("key", "group", "{}"),
    ("completions", "compl.", "{}"),
    ("shown", "shown", "{}"),
    ("accepted", "accepted", "{}"),
    ("acceptance_rate", "rate", "{:.1%}"),
    ("accepted_chars_per_shown", "chars/shown", "{:.1f}"),
    ("retained_30s", "kept 30s", "{:.0%}"),
    ("retained_120s", "kept 2m", "{:.0%}"),
    ("retained_600s", "kept 10m", "{:.0%}"),
    ("latency_p50_ms", "p50 ms", "{:.0f}"),
    ("latency_p99_ms", "p99 ms", "{:.0f}"),
]


def _open_file(settings: Settings, server: str | None):
    """The telemetry file, read directly because no server answered; on failure the message says
    where the server was looked for too."""
    from feedback.db import TelemetryDBError, open_db

    where = settings.server(server)
    if not settings.telemetry_db.exists():
        click.echo(f"codeloop: {where.unreachable()}; there is no telemetry yet at {settings.telemetry_db} either", err=True)
        sys.exit(2)
    try:
        return open_db(settings.telemetry_db, read_only=True)
    except TelemetryDBError as exc:
        click.echo(f"codeloop: {where.unreachable()}; reading the file instead failed: {exc}", err=True)
        sys.exit(2)


def _forget_in_file(settings: Settings, user: str) -> dict:
    """forget_user straight on the DuckDB file, in one transaction (no server holds it), then
    the file rewritten without the deleted rows' bytes (feedback/compact.py)."""
    from feedback import compact, journal
    from feedback.db import TelemetryDBError, open_db
    from feedback.privacy import forget_user

    if not settings.telemetry_db.exists():
        click.echo(f"codeloop: no server answers and there is no telemetry at {settings.telemetry_db}", err=True)
        sys.exit(2)
    try:
        con = open_db(settings.telemetry_db)
    except TelemetryDBError as exc:
        click.echo(f"codeloop: {exc}", err=True)
        sys.exit(2)
    fresh = None
    try:
        con.execute("BEGIN")
        forgotten = forget_user(con, user)
        con.execute("COMMIT")
        con.execute("CHECKPOINT")  # into the file now, rather than left in the write-ahead log
        if forgotten.completions or forgotten.experiments or forgotten.review_votes:
            fresh = compact.copy_live_rows(con, settings.telemetry_db)
    finally:
        con.close()
    if fresh is not None:
        compact.put_in_place(fresh, settings.telemetry_db)
    # Rows a killed server journaled but never wrote: the next start would write them back.
    journaled = journal.drop_user(journal.journal_path(settings.telemetry_db), user)
    counts = forgotten.as_dict()
    return {**counts, "completions": counts["completions"] + journaled, "experiments": forgotten.experiments,
            "review_votes": forgotten.review_votes}


def format_table(rows: list[dict], columns) -> str:
    """A plain aligned text table; missing values print as '-'."""
    head = [title for _, title, _ in columns]
    body = [[("-" if r.get(key) is None else fmt.format(r[key])) for key, _, fmt in columns] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def register(cli: click.Group, load_settings) -> None:
    server_option = click.option("--server", "server", help=SERVER_OPTION_HELP)

    @cli.command()
    @click.option("--by", type=click.Choice(["adapter", "language", "client", "day", "context"]), default="adapter", show_default=True)
    @click.option("--since", type=click.DateTime(), help="only completions from this time (e.g. 2026-11-01)")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @server_option
    def stats(by, since, as_json, server):
        """Acceptance rate, accepted and retained characters and latency, as a table."""
        settings = load_settings()
        data = get_json(settings, server, "/v1/metrics/acceptance", by=by, since=since and since.isoformat())
        if data is None:
            from feedback import queries

            data = {"by": by, "rows": [asdict(r) for r in queries.acceptance(_open_file(settings, server), by, since, None)]}
        if as_json:
            click.echo(json.dumps(data, indent=2, default=str))
        elif not data["rows"]:
            click.echo("no completions recorded yet")
        else:
            click.echo(format_table(data["rows"], STATS_COLUMNS))

    @cli.command()
    @click.option("-n", "--count", default=10, show_default=True, help="how many completions")
    @click.option("--offset", default=0, help="skip this many (to page back)")
    @click.option("--adapter", help="only this adapter")
    @click.option("--user", help="only this user pseudonym")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @server_option
    def logs(count, offset, adapter, user, as_json, server):
        """Recent completions with their outcomes, newest first (like `llm logs`)."""
        settings = load_settings()
        data = get_json(settings, server, "/v1/logs", limit=count, offset=offset, adapter=adapter, user=user)
        if data is None:
            from feedback import queries

            data = {"rows": queries.recent_completions(_open_file(settings, server), count, offset, adapter, user)}
        if as_json:
            click.echo(json.dumps(data, indent=2, default=str))
            return
        for row in data["rows"]:
            click.echo(_format_log(row))

    @cli.command("export")
    @click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--since", type=click.DateTime(), help="only completions from this time")
    @server_option
    def export_cmd(out, since, server):
        """Write completions joined with their outcomes to a Parquet file (for the trainer)."""
        settings = load_settings()
        where = settings.server(server)
        try:
            with client(settings, where.url) as api:
                done = export_telemetry(api, out, settings.telemetry_db, since)
        except ApiError as exc:  # a refusal: no fallback
            exit_for(exc)
        except NoTelemetry as exc:
            click.echo(f"codeloop: {where.unreachable()}; {exc.reason}", err=True)
            sys.exit(2)
        if done.read_directly:
            click.echo(f"wrote {done.rows} completions to {out} (no server answers at {where.url}; read {done.source} directly)")
        else:
            click.echo(f"wrote {out} ({out.stat().st_size} bytes) from {done.source}")

    @cli.command()
    @click.option("--user", required=True, help="the pseudonym, exactly as recorded (user_id in `codeloop logs --json`)")
    @server_option
    def forget(user, server):
        """Delete a user's completions, their events and their blind-review votes, take them off
        experiments' user lists, and remove their rows from training copies under data_dir:
        through the running server, or in the DuckDB file when none runs. Exit code 1 when there
        was nothing to delete."""
        if not user.strip() or user != user.strip() or len(user) > MAX_USER_CHARS:
            raise click.BadParameter(f"{user!r}: give the pseudonym as recorded: 1 to {MAX_USER_CHARS} characters, "
                                     "no leading or trailing spaces", param_hint="--user")
        settings = load_settings()
        url = settings.server_url(server)
        try:
            with client(settings, url) as api:
                data, where = api.delete(f"/v1/users/{quote(user, safe='')}"), f"through {url}"
        except ApiError as exc:
            if exc.unreachable and not exc.timed_out:  # no server (a timeout is not that: it may be deleting)
                data, where = _forget_in_file(settings, user), f"in {settings.telemetry_db} (no server answers at {url})"
            elif exc.status == 404 and "no telemetry recorded" in exc.reason:
                data, where = {"completions": 0, "events": 0}, f"through {url}"
            else:
                exit_for(exc)
        from feedback import copies

        # Here too: a server elsewhere has its own data_dir, training runs may live in this one.
        examples = data.get("training_examples", 0) + copies.forget_user(settings.data_dir, user)
        experiments, votes = data.get("experiments", 0), data.get("review_votes", 0)
        if not (data["completions"] or experiments or votes or examples):
            click.echo(f"codeloop: no telemetry recorded for user {user!r}, nothing deleted {where}; give the pseudonym "
                       "exactly as recorded (user_id in `codeloop logs --json`)", err=True)
            sys.exit(1)
        click.echo(f"deleted {data['completions']} completions and {data['events']} events of user {user!r} {where}")
        if votes:
            click.echo(f"deleted their {votes} blind-review votes")
        if experiments or examples:
            click.echo(f"removed them from {experiments} experiments' user lists and {examples} rows of training "
                       f"copies (run datasets, exports) under {settings.data_dir}")


def _format_log(row: dict) -> str:
    created = row.get("created_at")
    if isinstance(created, datetime):
        created = created.isoformat(sep=" ", timespec="seconds")
    text = (row.get("text") or "").replace("\n", "⏎")
    outcome = row.get("outcome") or ("shown" if row.get("shown") else "not shown")
    return f"{row['id']}  {created}  {row.get('adapter') or 'base'}  {row.get('language') or '-'}  {outcome}\n    {text[:100]!s}"

