"""`codeloop lsp` driven by two more real LSP clients, each followed into DuckDB.

- Headless Neovim (Debian's 0.7.2, built-in vim.lsp): tests/lsp/clients/nvim_probe.lua asks
  for an inline completion and a plain completion, inserts the inline text (Neovim computes
  and sends the incremental didChange itself), runs the item's `codeloop.accept` command and
  waits for the 1 s / 2 s retention reports.
- A plain Node client (vscode-languageserver-protocol over stdio, `node --test`):
  tests/lsp/clients/node/lsp_client.test.mjs; it also checks that a position past the end of
  the document gets InvalidParams.

Each client talks to a real `codeloop lsp` process, which talks real HTTP to the session's
real completion server on the real model; the rows are read back through GET /v1/logs.
The document folder has a space in its name, so the file URI is percent-encoded on the way in.
`make install-test` installs Neovim (apt) and the Node client's packages (npm ci).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lsp.conftest import wait_for_outcome

REPO = Path(__file__).resolve().parents[2]
CLIENTS = Path(__file__).resolve().parent / "clients"
NVIM_PROBE = CLIENTS / "nvim_probe.lua"
NODE_DIR = CLIENTS / "node"
NODE_TEST = NODE_DIR / "lsp_client.test.mjs"
RUN_TIMEOUT = 300  # seconds; one 16-token completion takes a few seconds on two slow cores


def _missing(name: str, install: str):
    """Skip (before the session's server starts) when a client program is truly absent."""
    return pytest.mark.skipif(shutil.which(name) is None, reason=(
        f"!!! {name} IS NOT INSTALLED: this real-editor test did not run ({install}; `make install-test` does it) !!!"))


def _client_env(server_url: str, data: Path, result: Path, tmp_path: Path) -> dict:
    return {
        **os.environ,
        "CODELOOP_PYTHON": sys.executable,
        "CODELOOP_SERVER_URL": server_url,
        "CODELOOP_LSP_DATA": str(data),
        "CODELOOP_RESULT": str(result),
        # Keep Neovim's LSP log, shada and state out of the home folder.
        **{var: str(tmp_path / "xdg" / var.lower()) for var in ("XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME")},
    }


def _run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    print(proc.stdout[-6000:], proc.stderr[-6000:], sep="\n")  # shown by pytest on failure
    return proc


@_missing("nvim", "apt-get install neovim")
def test_neovim_inline_completion_accept_and_retention(server, tmp_path):
    nvim = shutil.which("nvim")
    data, result_path = tmp_path / "lsp data", tmp_path / "nvim-result.json"
    proc = _run([nvim, "--headless", "-u", "NONE", "-i", "NONE", "-c", f"luafile {NVIM_PROBE.relative_to(REPO)}"],
                _client_env(server.url, data, result_path, tmp_path))
    assert result_path.exists(), f"the probe wrote no result (nvim exit {proc.returncode})"
    result = json.loads(result_path.read_text())
    assert result["ok"], f"nvim probe failed at step after {result['steps'][-1:]}: {result.get('error')}"
    assert proc.returncode == 0
    assert result["steps"] == ["initialized", "attached", "inline", "completion", "inserted", "accepted", "waited", "stopped"]
    assert result["capabilities"]["inlineCompletionProvider"] and result["capabilities"]["completionProvider"]
    assert result["messages"] == [], "the server complained about the init options"
    assert result["exit"] == {"code": 0, "signal": 0}

    item = result["inline"]
    text = item["insertText"]
    assert isinstance(text, str) and text
    assert item["command"]["command"] == "codeloop.accept"
    completion_id = item["command"]["arguments"][0]
    cursor = {"line": 7, "character": 4}
    assert item["range"] == {"start": cursor, "end": cursor}
    # The plain completion at the same place is the same suggestion (typing-ahead: no second
    # model call, no rejection of the visible one); no word before the cursor, so same text.
    assert result["completion_items"] == 1
    completion = result["completion"]
    assert completion["command"]["arguments"] == [completion_id]
    assert completion["textEdit"] == {"range": {"start": cursor, "end": cursor}, "newText": text}
    assert result["buffer_after_insert"].endswith('"""Return the n-th Fibonacci number."""\n    ' + text)
    assert result["accept_result"] is True
    stats = result["stats"]
    assert (stats["requests"], stats["model_calls"], stats["typeahead_hits"], stats["failures"]) == (2, 1, 1, 0)

    row = wait_for_outcome(server.url, completion_id,
                           lambda r: r["outcome"] == "accepted" and r["best_retained_ratio"] is not None)
    assert row["filepath"] == result["filepath"] == str(data / "nvim_example.py")
    assert (row["language"], row["client"], row["text"]) == ("python", "codeloop-lsp", text)
    assert row["shown"] and row["accepted"] and not row["rejected"]
    assert row["accepted_chars"] == len(text)
    # Nothing touched the inserted text afterwards: all of it was still there at 1 s and 2 s.
    assert row["best_retained_ratio"] == row["retained_latest"] == 1.0


def _node_packages(node_dir: Path) -> None:
    if (node_dir / "node_modules" / "vscode-languageserver-protocol").is_dir():
        return
    npm = shutil.which("npm")
    assert npm, f"{node_dir}/node_modules is missing and there is no npm to install it (`make install-test`)"
    proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=node_dir, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, f"npm ci in {node_dir} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@_missing("node", "apt-get install nodejs npm (Node 18 or later)")
def test_node_client_inline_completion_accept_and_invalid_position(server, tmp_path):
    node = shutil.which("node")
    _node_packages(NODE_DIR)
    data, result_path = tmp_path / "lsp data", tmp_path / "node-result.json"
    proc = _run([node, "--test", str(NODE_TEST.relative_to(REPO))], _client_env(server.url, data, result_path, tmp_path))
    assert proc.returncode == 0, "node --test failed (its output is above)"
    assert "# pass 1" in proc.stdout and "# fail 0" in proc.stdout
    result = json.loads(result_path.read_text())
    assert result["messages"] == [], "the server complained about the init options"

    row = wait_for_outcome(server.url, result["completionId"], lambda r: r["outcome"] == "accepted")
    assert row["filepath"] == result["filepath"] == str(data / "node_example.py")
    assert result["uri"].startswith("file://") and "lsp%20data" in result["uri"]
    assert (row["language"], row["client"], row["text"]) == ("python", "codeloop-lsp", result["insertText"])
    assert row["shown"] and row["accepted"] and not row["rejected"]
    assert row["accepted_chars"] == len(result["insertText"])
