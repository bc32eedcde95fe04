"""`codeloop experiment start|report|stop`: A/B experiments between adapters, on the running server."""
from __future__ import annotations

import json

import click

from codeloop.http_api import post_json, require_json
from codeloop.telemetry_cli import SERVER_OPTION_HELP, format_table


def register(cli: click.Group, load_settings) -> None:
    server_option = click.option("--server", "server", help=SERVER_OPTION_HELP)

    @cli.group()
    def experiment():
        """A/B experiments between adapters: start, report, stop."""

    @experiment.command("start")
    @click.option("--name", required=True)
    @click.option("--arm", "arms", multiple=True, required=True, metavar="ADAPTER=WEIGHT", help="repeat per arm; 'base' = no adapter")
    @click.option("--control", help="the arm others are compared with (default: the live adapter)")
    @click.option("--alpha", default=0.05, show_default=True)
    @server_option
    def experiment_start(name, arms, control, alpha, server):
        """Start an experiment, e.g. --arm team-py@6=50 --arm team-py@7=50."""
        weights = {}
        for arm in arms:
            adapter, _, weight = arm.partition("=")
            try:
                weights[adapter] = float(weight or 1)
            except ValueError:
                raise click.BadParameter(f"{arm!r}: expected ADAPTER=WEIGHT", param_hint="--arm") from None
        settings = load_settings()
        body = {"name": name, "arms": weights, "control": control, "alpha": alpha}
        click.echo(json.dumps(post_json(settings, server, "/v1/experiments", body), indent=2))

    @experiment.command("report")
    @click.argument("experiment_id")
    @server_option
    def experiment_report(experiment_id, server):
        """Per-arm counts, rates with 95 % Wilson intervals, z-test and sequential decision."""
        settings = load_settings()
        data = require_json(settings, server, f"/v1/experiments/{experiment_id}")
        click.echo(format_report(data))

    @experiment.command("stop")
    @click.argument("experiment_id")
    @click.option("--promote", help="an arm to make live, or 'winner'")
    @server_option
    def experiment_stop(experiment_id, promote, server):
        """Stop an experiment, optionally promoting an arm."""
        data = post_json(load_settings(), server, f"/v1/experiments/{experiment_id}/stop", {"promote": promote})
        click.echo(f"stopped {data['id']}" + (f"; live adapter is now {data['winner']}" if data.get("winner") else ""))


def format_report(data: dict) -> str:
    exp = data["experiment"]
    lines = [f"experiment {exp['id']} ({exp['name']}), {exp['status']}, control {exp['control']}"]
    columns = [("name", "arm", "{}"), ("users", "users", "{}"), ("shown", "shown", "{}"), ("accepted", "accepted", "{}"),
               ("rate", "rate", "{:.1%}"), ("wilson_low", "95% low", "{:.1%}"), ("wilson_high", "95% high", "{:.1%}"),
               ("accepted_chars", "acc. chars", "{}"), ("retained_chars", "kept chars", "{}")]
    lines.append(format_table(data["arms"], columns))
    for c in data.get("comparisons", []):
        lines.append(f"{c['arm']} vs {exp['control']}: effect {c['effect']:+.1%}, z-test p={c['p_value']:.3g}, "
                     f"always-valid p={c['sequential_p_value']:.3g} -> {c['decision']}")
    lines.append(f"winner: {data.get('winner') or 'none yet'}")
    return "\n".join(lines)
