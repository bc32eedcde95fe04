"""The editor set-ups the README gives (codeloop/editor_setup.py) are the ones `codeloop editor`
prints, and the Neovim and Emacs ones work as written: a real headless Neovim loads its set-up
as init.lua, a real Emacs (--batch, eglot) loads its one as init.el; each opens a Python file,
and codeloop's language server answers it from the real server. (Helix is not installed here.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codeloop.editor_setup import EDITORS, codeloop_command, render

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "tests" / "lsp" / "clients" / "nvim_setup_probe.lua"
EMACS_PROBE = REPO / "tests" / "lsp" / "clients" / "emacs_setup_probe.el"
README_COMMAND, README_URL = "/path/to/codeloop/.venv/bin/codeloop", "http://127.0.0.1:8000"


@pytest.mark.parametrize("editor", sorted(EDITORS))
def test_the_readme_shows_each_set_up_as_the_cli_prints_it(editor):
    readme = (REPO / "README.md").read_text()
    assert render(editor, README_COMMAND, README_URL) in readme
    printed = subprocess.run([sys.executable, "-m", "codeloop.cli", "editor", editor, "--server", README_URL],
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0 and printed.stdout == render(editor, codeloop_command(), README_URL)


@pytest.mark.skipif(shutil.which("nvim") is None, reason="!!! nvim IS NOT INSTALLED: `make install-test` installs it !!!")
def test_the_neovim_set_up_starts_the_language_server_and_completes(server, tmp_path):
    init = tmp_path / "init.lua"
    init.write_text(render("neovim", codeloop_command(), server.url))
    data, result_path = tmp_path / "lsp data", tmp_path / "result.json"
    env = _env(data, result_path, tmp_path)
    proc = subprocess.run([shutil.which("nvim"), "--headless", "-u", str(init), "-i", "NONE", "-c", f"luafile {PROBE}"],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert result_path.exists(), f"nvim wrote no result: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    result = json.loads(result_path.read_text())
    assert result["ok"], result
    assert result["steps"] == ["opened", "attached", "completed"]
    assert result["omnifunc"] == "v:lua.vim.lsp.omnifunc"
    items = result["completion"]["items"]
    assert len(items) == 1 and items[0]["textEdit"]["newText"].strip()
    assert items[0]["command"]["command"] == "codeloop.accept"


@pytest.mark.skipif(shutil.which("emacs") is None, reason="!!! emacs IS NOT INSTALLED: `make install-test` installs emacs-nox and elpa-eglot !!!")
def test_the_emacs_set_up_starts_the_language_server_and_completes(server, tmp_path):
    init = tmp_path / "init.el"
    init.write_text(render("emacs", codeloop_command(), server.url))
    data, result_path = tmp_path / "lsp data", tmp_path / "result.json"
    # Not -Q: Debian's site start-up puts the elpa-eglot package on the load path.
    proc = subprocess.run([shutil.which("emacs"), "--batch", "-l", str(init), "-l", str(EMACS_PROBE)],
                          env={**_env(data, result_path, tmp_path), "HOME": str(tmp_path / "home")},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert result_path.exists(), f"emacs wrote no result: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    result = json.loads(result_path.read_text())
    assert result["ok"] is True, result
    assert result["steps"] == ["completed", "connected", "opened"]  # pushed: newest first
    [candidate] = result["candidates"]  # the completion fallback's one item: the suggestion
    assert candidate.startswith("li") and len(candidate) > 2


def _env(data: Path, result_path: Path, tmp_path: Path) -> dict:
    return {**os.environ, "CODELOOP_DATA_DIR": str(data), "CODELOOP_CONFIG": os.devnull,
            "CODELOOP_LSP_DATA": str(data), "CODELOOP_RESULT": str(result_path),
            **{var: str(tmp_path / "xdg" / var.lower()) for var in ("XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME")}}
