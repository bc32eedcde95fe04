"""`codeloop adapter list|add|promote|remove` against the real server (the session's)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

from tests.conftest import install_adapter


def cli(server, *args: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CODELOOP_")},
           "CODELOOP_DATA_DIR": str(server.data_dir), "CODELOOP_CONFIG": os.devnull}
    return subprocess.run([sys.executable, "-m", "codeloop.cli", "adapter", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_add_list_promote_remove(server, make_adapter):
    folder = install_adapter(make_adapter(41), server.adapters_dir, "cli-team-1")
    added = cli(server, "add", "cli-team@1", str(folder))  # the server is found through data_dir
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("loaded cli-team@1 (rank 4")
    listed = cli(server, "list")
    assert listed.returncode == 0 and "cli-team@1" in listed.stdout and "live: base (no adapter)" in listed.stdout
    assert cli(server, "promote", "cli-team@1").stdout.strip() == "live adapter: cli-team@1"
    assert httpx.get(server.url + "/v1/adapters").json()["live"] == "cli-team@1"
    refused = cli(server, "remove", "cli-team@1")  # live: refused, with the server's reason
    assert refused.returncode == 2 and "the server refused (409)" in refused.stderr
    assert cli(server, "promote", "base").stdout.strip() == "live adapter: base"
    removed = cli(server, "remove", "cli-team@1")
    assert removed.returncode == 0, removed.stderr
    names = [a["name"] for a in json.loads(cli(server, "list", "--json").stdout)["adapters"]]
    assert "cli-team@1" not in names


def test_errors_are_the_servers_reasons(server, tmp_path):
    unknown = cli(server, "promote", "nobody@1")
    assert unknown.returncode == 2 and "unknown adapter" in unknown.stderr
    outside = cli(server, "add", "x@1", str(tmp_path))
    assert outside.returncode == 2 and "the server refused (4" in outside.stderr
