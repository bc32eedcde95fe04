"""Language-server fixtures: `codeloop lsp` as a real process over stdio (pytest-lsp client),
talking real HTTP to a real completion server on the real default model."""
from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import httpx
import pytest
from lsprotocol import types
from pytest_lsp import ClientServerConfig, client_capabilities

# Fast settings for tests: no debounce unless a test sets one, events sent at once,
# retention measured at seconds instead of minutes.
# No latency budget either: answers must not depend on how fast this machine is (one test sets it).
FAST = {"debounceMs": 0, "eventFlushMs": 20, "retentionSeconds": [1, 2], "maxTokens": 16, "timeoutMs": 60000,
        "latencyBudgetMs": None, "lineBudgetMs": None}


def lsp_env(data_dir: Path) -> dict:
    data_dir.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "CODELOOP_DATA_DIR": str(data_dir), "CODELOOP_CONFIG": os.devnull,
            "CODELOOP_LOG_LEVEL": "info"}


async def start_lsp(server_url: str, data_dir: Path, options: dict | None = None, capabilities: str = "visual-studio-code",
                    workspace: Path | None = None):
    """A `codeloop lsp` process with a pytest-lsp client, initialized (FAST options, then `options`;
    `workspace`: the folder sent as rootUri and the one workspace folder)."""
    config = ClientServerConfig(server_command=[sys.executable, "-m", "codeloop.cli", "lsp", "--server", server_url],
                                server_env=lsp_env(data_dir))
    client = await config.start()
    folders = {"root_uri": workspace.as_uri(), "workspace_folders": [types.WorkspaceFolder(workspace.as_uri(), workspace.name)]} if workspace else {}
    client.init_result = await client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities(capabilities), initialization_options={**FAST, **(options or {})}, **folders))
    return client


@contextlib.asynccontextmanager
async def lsp_session(server_url: str, data_dir: Path, options: dict | None = None, capabilities: str = "visual-studio-code",
                      workspace: Path | None = None):
    """A `codeloop lsp` process, initialized; shut down cleanly afterwards."""
    client = await start_lsp(server_url, data_dir, options, capabilities, workspace)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.shutdown_session(), 30)
        await client.stop()


def open_doc(client, uri: str, text: str, language: str = "python", version: int = 1) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, language, version, text)))


def insert(client, uri: str, version: int, line: int, character: int, text: str) -> None:
    pos = types.Position(line, character)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        [types.TextDocumentContentChangePartial(range=types.Range(pos, pos), text=text)]))


async def inline(client, uri: str, line: int, character: int, automatic: bool = False):
    kind = types.InlineCompletionTriggerKind.Automatic if automatic else types.InlineCompletionTriggerKind.Invoked
    return await client.text_document_inline_completion_async(types.InlineCompletionParams(
        context=types.InlineCompletionContext(trigger_kind=kind),
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, character)))


async def stats(client) -> dict:
    return await client.protocol.send_request_async("codeloop/stats", {})


async def wait_stats(client, check, timeout: float = 60):
    """Poll codeloop/stats until `check(stats)` holds; the stats."""
    deadline, current = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        current = await stats(client)
        if check(current):
            return current
        await asyncio.sleep(0.1)
    raise AssertionError(f"language server stats never satisfied the check: {current}")


async def suggest_in_each(client, docs: list[str], folder: str, timeout: float = 60) -> list[tuple]:
    """Open each two-line document, ask for a suggestion at the end of its second line, and
    wait until their shown events are delivered: (uri, line, character, item) per document."""
    items = []
    for i, code in enumerate(docs):
        uri = f"file:///work/{folder}/m{i}.py"
        open_doc(client, uri, code)
        line, ch = 1, len(code.splitlines()[1])
        result = await inline(client, uri, line, ch)
        assert result.items, f"no suggestion for {code!r}"
        items.append((uri, line, ch, result.items[0]))
    await wait_stats(client, lambda s: s.events_sent == len(docs) and s.events_unsent == 0, timeout)
    return items


def logged_row(server_url: str, find, check=lambda row: True, timeout: float = 30) -> dict:
    """Poll /v1/logs (the server's DuckDB rows, written in the background) until the newest
    row `find(row)` picks satisfies `check(row)`; that row."""
    deadline, row = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        rows = httpx.get(server_url + "/v1/logs", params={"limit": 200}, timeout=10).json()["rows"]
        row = next((r for r in rows if find(r)), None)
        if row is not None and check(row):
            return row
        time.sleep(0.2)
    raise AssertionError(f"no logged completion reached the check in {timeout}s; last row found: {row}")


def wait_for_outcome(server_url: str, completion_id: str, check, timeout: float = 30) -> dict:
    """The /v1/logs row of this completion once `check(row)` holds."""
    return logged_row(server_url, lambda r: r["id"] == completion_id, check, timeout)


@pytest.fixture
def lsp_data(tmp_path) -> Path:
    return tmp_path / "lsp-data"
