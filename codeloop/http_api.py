"""The CLI's side of codeloop's HTTP API: which server (Settings.server), and the client's
errors (codeloop/api_client.py) turned into one message and an exit code.

    data = get_json(settings, server, "/v1/logs", limit=10)   # None when no server answers
    data = require_json(settings, server, "/v1/adapters")     # exits 2 when none answers
    post_json(settings, server, "/v1/experiments", body)      # exits 2 when none answers
"""
from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from codeloop.api_client import ApiClient, ApiError
from codeloop.settings import Settings

__all__ = ["client", "delete_json", "exit_for", "get_json", "post_json", "require_json"]


def client(settings: Settings, url: str) -> ApiClient:
    """A client of the server at `url` (Settings.server_url: --server, else the recorded one,
    else host:port), with the configured token."""
    return ApiClient(url, token=settings.api_token, timeout=600)


def get_json(settings: Settings, server: str | None, path: str, **params: Any) -> Any:
    """JSON from the running server, or None when no server answers there."""
    with client(settings, settings.server_url(server)) as api:
        try:
            return api.get(path, **params)
        except ApiError as exc:
            if exc.unreachable:
                return None
            exit_for(exc)


def require_json(settings: Settings, server: str | None, path: str, **params: Any) -> Any:
    """JSON from the running server; exits 2, saying where it looked, when none answers."""
    return _send(settings, server, lambda api: api.get(path, **params))


def post_json(settings: Settings, server: str | None, path: str, body: dict | None = None) -> Any:
    return _send(settings, server, lambda api: api.post(path, body))


def delete_json(settings: Settings, server: str | None, path: str) -> Any:
    return _send(settings, server, lambda api: api.delete(path))


def _send(settings: Settings, server: str | None, call) -> Any:
    where = settings.server(server)
    with client(settings, where.url) as api:
        try:
            return call(api)
        except ApiError as exc:
            if exc.unreachable:
                click.echo(f"codeloop: {where.unreachable()}", err=True)
                sys.exit(2)
            exit_for(exc)


def exit_for(exc: ApiError) -> NoReturn:
    """Exit with the server's own reason for a refusal (2 for 4xx, 1 for 5xx)."""
    status = exc.status or 0
    hint = " (give codeloop a token: CODELOOP_API_TOKEN, or api_token in codeloop.toml)" if status in (401, 403) else ""
    click.echo(f"codeloop: the server refused ({status}): {exc.reason}{hint}", err=True)
    sys.exit(2 if status < 500 else 1)
