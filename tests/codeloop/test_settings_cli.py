"""Settings precedence and the command line's error handling (real subprocesses)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from codeloop.settings import Settings, SettingsError, load_settings

SUBCOMMANDS = [[], ["serve"], ["up"], ["model"], ["model", "prepare"], ["settings"]]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("CODELOOP_"):
            monkeypatch.delenv(key)
    (tmp_path / "codeloop.toml").touch()  # an empty file: CODELOOP_CONFIG must name one that exists
    monkeypatch.setenv("CODELOOP_CONFIG", str(tmp_path / "codeloop.toml"))
    return tmp_path


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codeloop.cli", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)


def test_defaults(clean_env):
    s = load_settings()
    assert (s.host, s.port, s.engine, s.model, s.gguf_quant) == ("127.0.0.1", 8000, "auto", "", "q8_0")
    assert s.adapters_dir == s.data_dir / "adapters"


def test_toml_then_env_then_arguments(clean_env, monkeypatch):
    (clean_env / "codeloop.toml").write_text('port = 9001\nmax_prompt_tokens = 512\nlog_level = "debug"\n')
    s = load_settings()
    assert (s.port, s.max_prompt_tokens, s.log_level) == (9001, 512, "debug")
    monkeypatch.setenv("CODELOOP_PORT", "9002")
    assert load_settings().port == 9002  # environment beats the file
    assert load_settings(port=9003).port == 9003  # a command-line flag beats both
    assert load_settings().max_prompt_tokens == 512


@pytest.mark.parametrize(
    "source, name",
    [
        ({"env": ("CODELOOP_PORT", "eighty")}, "port"),
        ({"env": ("CODELOOP_ENGINE", "tensorflow")}, "engine"),
        ({"env": ("CODELOOP_GGUF_QUANT", "q2_k")}, "gguf_quant"),
        ({"env": ("CODELOOP_FIM_TEMPLATE", "fortran")}, "fim_template"),
        ({"env": ("CODELOOP_MODEL", "/no/such/model")}, "model"),
        ({"toml": "max_prompt_tokens = -5\n"}, "max_prompt_tokens"),
        ({"toml": "no_such_setting = 1\n"}, "no_such_setting"),
    ],
)
def test_bad_setting_is_named(clean_env, monkeypatch, source, name):
    if "env" in source:
        monkeypatch.setenv(*source["env"])
    else:
        (clean_env / "codeloop.toml").write_text(source["toml"])
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert f"'{name}'" in str(err.value)
    where = source["env"][0] if "env" in source else "codeloop.toml"
    assert where in str(err.value)


def test_a_config_file_that_does_not_exist_is_an_error(clean_env, monkeypatch):
    missing = clean_env / "codeloop.tmol"
    monkeypatch.setenv("CODELOOP_CONFIG", str(missing))
    with pytest.raises(SettingsError, match=f"CODELOOP_CONFIG={missing}: no such file"):
        load_settings()
    result = run_cli("settings", env={"CODELOOP_CONFIG": str(missing)})
    assert result.returncode == 2 and "no such file" in result.stderr


def test_broken_toml_is_reported(clean_env):
    (clean_env / "codeloop.toml").write_text("port = = 3\n")
    with pytest.raises(SettingsError, match="cannot read settings"):
        load_settings()


def test_cli_bad_setting_exits_2_with_the_name(clean_env):
    result = run_cli("serve", env={"CODELOOP_PORT": "70000", "CODELOOP_CONFIG": os.devnull})
    assert result.returncode == 2
    assert "invalid setting 'port' (from CODELOOP_PORT)" in result.stderr


def test_cli_bad_flag_exits_2(clean_env):
    result = run_cli("serve", "--port", "not-a-number")
    assert result.returncode == 2
    assert "--port" in result.stderr


@pytest.mark.parametrize("args", SUBCOMMANDS)
def test_every_subcommand_has_help(args):
    result = run_cli(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_settings_command_shows_effective_values(clean_env):
    (clean_env / "codeloop.toml").write_text("port = 9100\n")
    result = run_cli("settings", "--json", env={"CODELOOP_CONFIG": str(clean_env / "codeloop.toml")})
    assert result.returncode == 0, result.stderr
    assert '"port": 9100' in result.stdout


def test_settings_command_says_where_each_value_comes_from(clean_env):
    (clean_env / "codeloop.toml").write_text("port = 9100\n")
    result = run_cli("settings", env={"CODELOOP_CONFIG": str(clean_env / "codeloop.toml"), "CODELOOP_LOG_LEVEL": "debug",
                                      "CODELOOP_DATA_DIR": str(clean_env / "data")})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"port = 9100  # from {clean_env / 'codeloop.toml'}" in lines
    assert 'log_level = "debug"  # from CODELOOP_LOG_LEVEL' in lines and "max_queue = 64  # default" in lines
    # Settings left null resolve to paths: those are shown too.
    assert f"# adapters_dir: {clean_env / 'data' / 'adapters'}" in lines
    assert f"# auth_tokens_path: {clean_env / 'data' / 'auth_tokens.json'}" in lines


@pytest.mark.parametrize("toml, message", [
    ("prot = 3\n", "invalid setting 'prot' (from {}): Extra inputs are not permitted; did you mean 'port'?"),
    ("[trainer.train]\nlrr = 1\n", "invalid setting 'trainer.train.lrr' (from {}): Extra inputs are not permitted; did you mean 'trainer.train.lr'?"),
])
def test_a_misspelt_setting_suggests_the_closest_name(clean_env, toml, message):
    (clean_env / "codeloop.toml").write_text(toml)
    result = run_cli("settings", env={"CODELOOP_CONFIG": str(clean_env / "codeloop.toml")})
    assert result.returncode == 2
    assert message.format(clean_env / "codeloop.toml") in result.stderr


def test_settings_type_is_the_one_object():
    # Parts receive this object; they never read CODELOOP_* themselves.
    assert "data_dir" in Settings.model_fields and "adapter_dir" in Settings.model_fields


def test_serve_refuses_a_telemetry_file_that_is_not_codeloops(clean_env):
    import hashlib

    import duckdb

    data = clean_env / "data"
    data.mkdir()
    garbage = data / "telemetry.duckdb"
    garbage.write_bytes(b"this is not a database\n" * 100)
    foreign = clean_env / "foreign" / "telemetry.duckdb"
    foreign.parent.mkdir()
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.close()
    for db, needle in ((garbage, "DuckDB"), (foreign, "codeloop")):
        before = hashlib.sha256(db.read_bytes()).hexdigest()
        result = run_cli("serve", env={"CODELOOP_DATA_DIR": str(db.parent)})
        assert result.returncode == 2, result.stderr
        assert needle in result.stderr and str(db) in result.stderr
        assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # untouched


def test_vllm_remote_without_urls_is_refused_by_name(tmp_path):
    import subprocess
    import sys

    env = {**__import__("os").environ, "CODELOOP_ENGINE": "vllm-remote", "CODELOOP_CONFIG": os.devnull}
    env.pop("CODELOOP_VLLM_URLS", None)
    proc = subprocess.run([sys.executable, "-m", "codeloop.cli", "settings"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "vllm_urls" in proc.stderr and "vllm serve" in proc.stderr


def test_train_on_a_folder_that_is_not_a_repository_fails_before_making_a_run(clean_env, tmp_path):
    data = tmp_path / "data"
    for repo in (tmp_path / "nonexistent", tmp_path):  # missing, and a folder without .git
        result = run_cli("train", "--repo", str(repo), env={"CODELOOP_DATA_DIR": str(data)})
        assert result.returncode == 2 and f"--repo {repo}: not a git repository" in result.stderr
    assert not (data / "runs").exists()


def test_train_resume_takes_a_run_id_not_a_path(clean_env, tmp_path):
    for bad in ("../../etc", "/tmp/run", ".hidden"):
        result = run_cli("train", "--resume", bad, env={"CODELOOP_DATA_DIR": str(tmp_path / "data")})
        assert result.returncode == 2 and "a run id is the name of a folder under data_dir/runs" in result.stderr
