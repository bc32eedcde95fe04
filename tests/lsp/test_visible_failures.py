"""Failures an editor user can see (window/showMessage), over real stdio against the real
server: an unreachable server, an option with a typo, maxTokens over the server's limit."""
from __future__ import annotations

import asyncio

import httpx

from tests.conftest import free_port
from tests.lsp.conftest import inline, logged_row, lsp_session, open_doc, stats


async def told(client, text: str, timeout: float = 15) -> str:
    """The window/showMessage text holding `text` (shown during initialize or later)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = [m.message for m in client.messages if text in m.message]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no message with {text!r}; messages: {[m.message for m in client.messages]}")


async def test_an_unreachable_server_is_told_once_with_its_url(lsp_data):
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    async with lsp_session(url, lsp_data, {"serverUrl": url}) as client:
        open_doc(client, "file:///work/down/a.py", "def add(a, b):\n    return")
        assert not (await inline(client, "file:///work/down/a.py", 1, 10)).items
        assert not (await inline(client, "file:///work/down/a.py", 1, 10)).items  # asked again: not told again
        message = await told(client, f"cannot reach the completion server at {url}")
        assert "serverUrl" in message
        assert (await stats(client)).failures == 2
        await asyncio.sleep(0.5)
        assert sum(url in m.message for m in client.messages) == 1


async def test_a_typo_in_one_option_keeps_the_others(server, lsp_data):
    """The issue's case: `debounceMS` threw away every option, a valid serverUrl included."""
    elsewhere = f"http://127.0.0.1:{free_port()}"  # the --server the process was started with
    async with lsp_session(elsewhere, lsp_data, {"serverUrl": server.url, "debounceMS": 80}) as client:
        await told(client, "unknown option 'debounceMS' ignored; did you mean 'debounceMs'?")
        open_doc(client, "file:///work/typo/a.py", "def add(a, b):\n    return")
        assert (await inline(client, "file:///work/typo/a.py", 1, 10)).items  # serverUrl applied


async def test_max_tokens_over_the_servers_limit_is_clamped_and_said(server, lsp_data):
    limit = httpx.get(server.url + "/healthz", timeout=10).json()["max_tokens_limit"]
    code = "def clamp_me(values):\n    "
    async with lsp_session(server.url, lsp_data, {"maxTokens": limit + 488}) as client:
        open_doc(client, "file:///work/clamp/a.py", code)
        await inline(client, "file:///work/clamp/a.py", 1, 4)
        await told(client, f"maxTokens {limit + 488} is over the server's limit of {limit}; asking for {limit}")
        row = logged_row(server.url, lambda r: r["prefix"] == code)
    assert row["completion_tokens"] <= limit  # asked and answered, not refused with a 422


async def test_a_refused_request_is_told_once_with_the_servers_reason(server, lsp_data):
    """A 422 used to reach stderr only. Here the server refuses every request: the pseudonym
    is longer than the 200 characters it accepts."""
    async with lsp_session(server.url, lsp_data, {"user": "u" * 300}) as client:
        open_doc(client, "file:///work/refused/a.py", "def add(a, b):\n    return")
        for _ in range(2):
            assert not (await inline(client, "file:///work/refused/a.py", 1, 10)).items
        message = await told(client, "refused the request (HTTP 422)")
        assert server.url in message and "user" in message and "200" in message
        await asyncio.sleep(0.5)
        assert sum("HTTP 422" in m.message for m in client.messages) == 1
