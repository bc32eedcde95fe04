"""`codeloop token create|list|revoke`: the API tokens a server with auth on accepts.

They work on the token file directly (server/tokens.py), so they work whether the server runs
or not, and a running server picks the change up within a second.
"""
from __future__ import annotations

import json
import sys

import click

from server.tokens import TokenError, create_token, read_tokens, revoke_token


def register(cli: click.Group, load_settings) -> None:
    @cli.group()
    def token() -> None:
        """API tokens: once one exists, every /v1 route needs `Authorization: Bearer <token>`."""

    @token.command("create")
    @click.option("--user", required=True, help="the pseudonym this token's telemetry and A/B arm are recorded under")
    @click.option("--admin", is_flag=True, help="may also load/promote/unload adapters, run experiments, export and forget")
    @click.option("--note", default="", help="what the token is for, shown by `codeloop token list`")
    def create(user: str, admin: bool, note: str) -> None:
        """Make a token and print it (only now: the server keeps only its sha256)."""
        path = load_settings().auth_tokens_path
        first = not any(t.active for t in _read(path))
        try:
            secret, record = create_token(path, user, admin=admin, note=note)
        except TokenError as exc:
            _fail(str(exc))
        click.echo(secret)  # alone on stdout, so that TOKEN=$(codeloop token create ...) works
        role = "admin" if admin else "user"
        click.echo(f"created {role} token {record.id} for {user!r} in {path}; it is shown only once", err=True)
        if first:
            click.echo("auth is now ON: every /v1 request needs a token (`Authorization: Bearer …`)", err=True)
            click.echo(_server_auth_state(load_settings()), err=True)

    @token.command("list")
    @click.option("--json", "as_json", is_flag=True, help="print JSON (never the tokens themselves)")
    def list_tokens(as_json: bool) -> None:
        """The tokens, active and revoked (ids, users, roles; never the tokens)."""
        path = load_settings().auth_tokens_path
        tokens = _read(path)
        if as_json:
            click.echo(json.dumps([{k: v for k, v in t.__dict__.items() if k != "sha256"} for t in tokens], indent=2))
            return
        if not tokens:
            click.echo(f"no tokens in {path}: auth is off, the API answers anyone who can reach it")
            return
        click.echo(f"{'id':<9} {'user':<20} {'role':<6} {'created':<26} {'revoked':<26} note")
        for t in tokens:
            click.echo(f"{t.id:<9} {t.user[:20]:<20} {'admin' if t.admin else 'user':<6} {t.created_at:<26} {t.revoked_at or '-':<26} {t.note}")

    @token.command("revoke")
    @click.argument("token_id")
    def revoke(token_id: str) -> None:
        """Revoke a token by its id; a running server refuses it within a second."""
        path = load_settings().auth_tokens_path
        try:
            record = revoke_token(path, token_id)
        except TokenError as exc:
            _fail(str(exc))
        click.echo(f"revoked token {record.id} of {record.user!r}")


def _server_auth_state(settings) -> str:
    """Whether the running server (if any) already refuses requests without a token: it
    re-reads the token file within a second, unless it uses another file."""
    import time

    import httpx

    where = settings.server()
    deadline = time.monotonic() + 5
    while True:
        try:
            status = httpx.get(where.url + "/v1/adapters", timeout=5).status_code
        except httpx.TransportError:
            return f"no server answers at {where.url} now; a server started with this data_dir will need tokens"
        if status == 401:
            return f"checked: the server at {where.url} now refuses requests without a token"
        if time.monotonic() > deadline:
            return (f"WARNING: the server at {where.url} still answers without a token (HTTP {status}): it reads "
                    "another token file (its auth_tokens_file or data_dir differs from this command's)")
        time.sleep(0.3)


def _read(path):
    try:
        return read_tokens(path)
    except TokenError as exc:
        _fail(str(exc))


def _fail(message: str):
    click.echo(f"codeloop: {message}", err=True)
    sys.exit(2)
