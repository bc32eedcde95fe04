"""`codeloop adapter list|add|promote|remove`: the adapters API of the running server."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import click

from codeloop.http_api import delete_json, post_json, require_json

COLUMNS = ("name", "live", "rank", "template", "size", "registered")


def register(cli: click.Group, load_settings) -> None:
    server_option = click.option("--server", "server", help="server URL (default: the server recorded in data_dir, else settings host/port)")

    @cli.group()
    def adapter():
        """LoRA adapters on the running server: list, add, promote, remove."""

    @adapter.command("list")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @server_option
    def adapter_list(as_json, server):
        """The registered adapters and which one is live."""
        settings = load_settings()
        data = require_json(settings, server, "/v1/adapters")
        if as_json:
            click.echo(json.dumps(data, indent=2))
            return
        click.echo(format_adapters(data))

    @adapter.command("add")
    @click.argument("name")
    @click.argument("path", type=click.Path(file_okay=False, path_type=Path))
    @server_option
    def adapter_add(name, path, server):
        """Register and load the adapter folder PATH as NAME (an immutable version, e.g. team-py@7)."""
        info = post_json(load_settings(), server, "/v1/adapters", {"name": name, "path": str(path.resolve())})
        click.echo(f"loaded {info['name']} (rank {info['rank']}, {info['size_bytes']} bytes, sha256 {info['sha256'][:12]}…)")

    @adapter.command("promote")
    @click.argument("name")
    @server_option
    def adapter_promote(name, server):
        """Make NAME the live adapter (`base`: no adapter)."""
        data = post_json(load_settings(), server, f"/v1/adapters/{quote(name, safe='')}/promote")
        click.echo(f"live adapter: {data['live'] or 'base'}")

    @adapter.command("remove")
    @click.argument("name")
    @server_option
    def adapter_remove(name, server):
        """Unload NAME (refused while it is live: promote another first)."""
        data = delete_json(load_settings(), server, f"/v1/adapters/{quote(name, safe='')}")
        click.echo(f"removed {name}; {len(data['adapters'])} adapters remain, live: {data['live'] or 'base'}")


def format_adapters(data: dict) -> str:
    from codeloop.telemetry_cli import format_table

    rows = [{"name": a["name"], "live": "*" if a["live"] else "", "rank": a["rank"], "template": a.get("fim_template") or "-",
             "size": f"{a['size_bytes'] / 1e6:.1f} MB", "registered": datetime.fromtimestamp(a["created_at"]).strftime("%Y-%m-%d %H:%M")}
            for a in data["adapters"]]
    head = f"base model {data['base_model']}; live: {data['live'] or 'base (no adapter)'}"
    if not rows:
        return head + "\nno adapters registered"
    return head + "\n" + format_table(rows, [(c, c, "{}") for c in COLUMNS])
