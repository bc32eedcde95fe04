"""The CLI's calls to codeloop's own HTTP API: which server (Settings.server), the token,
and the server's refusals turned into one message and an exit code.

    data = get_json(settings, server, "/v1/logs", limit=10)   # None when no server answers
    post_json(settings, server, "/v1/experiments", body)      # exits 2 when none answers
"""
from __future__ import annotations

import sys
from typing import Any

import click
import httpx

from codeloop.settings import Settings

__all__ = ["auth_headers", "delete_json", "get_json", "post_json", "raise_for"]


def auth_headers(settings: Settings) -> dict[str, str]:
    """The Authorization header for a server with auth on (setting api_token)."""
    return {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}


def get_json(settings: Settings, server: str | None, path: str, **params: Any) -> Any:
    """JSON from the running server, or None when no server answers there."""
    url = settings.server_url(server)
    try:
        r = httpx.get(url + path, params={k: v for k, v in params.items() if v is not None}, headers=auth_headers(settings), timeout=60)
    except httpx.TransportError:
        return None
    raise_for(r)
    return r.json()


def post_json(settings: Settings, server: str | None, path: str, body: dict | None = None) -> Any:
    return _send(settings, server, "POST", path, body)


def delete_json(settings: Settings, server: str | None, path: str) -> Any:
    return _send(settings, server, "DELETE", path, None)


def _send(settings: Settings, server: str | None, method: str, path: str, body: dict | None) -> Any:
    where = settings.server(server)
    try:
        r = httpx.request(method, where.url + path, json=body, headers=auth_headers(settings), timeout=600)
    except httpx.TransportError:
        click.echo(f"codeloop: {where.unreachable()}", err=True)
        sys.exit(2)
    raise_for(r)
    return r.json()


def raise_for(r: httpx.Response) -> None:
    """Exit with the server's own reason for a refusal (2 for 4xx, 1 for 5xx)."""
    if r.status_code >= 400:
        try:
            message = r.json().get("error", r.text)
        except ValueError:
            message = r.text
        hint = " (give codeloop a token: CODELOOP_API_TOKEN, or api_token in codeloop.toml)" if r.status_code in (401, 403) else ""
        click.echo(f"codeloop: the server refused ({r.status_code}): {message}{hint}", err=True)
        sys.exit(2 if r.status_code < 500 else 1)
