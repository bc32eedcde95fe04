"""`codeloop token create` says whether the running server now refuses requests without a token:
the first token turns auth on only for a server that reads the same token file."""
from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlparse

import httpx


def token_create(data_dir, port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "CODELOOP_DATA_DIR": str(data_dir), "CODELOOP_CONFIG": os.devnull,
           "CODELOOP_HOST": "127.0.0.1", "CODELOOP_PORT": str(port)}
    return subprocess.run([sys.executable, "-m", "codeloop.cli", "token", "create", "--user", "ops"], env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_server_reading_another_token_file_is_named_in_a_warning(server, tmp_path):
    """The shared server keeps its own data_dir: a token made in another one leaves it open, and
    the command must say so rather than claim auth is on."""
    port = urlparse(server.url).port
    done = token_create(tmp_path / "elsewhere", port)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("cl_")
    assert f"WARNING: the server at http://127.0.0.1:{port} still answers without a token" in done.stderr
    assert httpx.get(server.url + "/v1/adapters", timeout=30).status_code == 200  # untouched


def test_no_server_running_is_said_as_such(tmp_path):
    done = token_create(tmp_path / "quiet", 9)
    assert done.returncode == 0, done.stderr
    assert "no server answers at http://127.0.0.1:9 now" in done.stderr
