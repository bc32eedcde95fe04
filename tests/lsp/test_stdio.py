"""`codeloop lsp` over real stdio (pytest-lsp) against the real server on the real model."""
import asyncio
import re
import time

import httpx
import pytest
from lsprotocol import types

from tests.conftest import metric
from tests.lsp.conftest import inline, insert, logged_row, lsp_session, open_doc, stats, wait_for_outcome, wait_stats

URI = "file:///work/project/maths.py"
CODE = "def add(a, b):\n    return"
CURSOR = (1, 10)


async def first_item(client, uri=URI, pos=CURSOR, **kw):
    result = await inline(client, uri, *pos, **kw)
    assert result.items, "the real model gave no suggestion"
    return result.items[0]


async def test_inline_completion_accept_and_retention_reach_duckdb(server, lsp_data):
    async with lsp_session(server.url, lsp_data) as client:
        assert client.init_result.capabilities.inline_completion_provider is not None
        open_doc(client, URI, CODE)
        item = await first_item(client)
        assert item.command.command == "codeloop.accept" and item.range.start == types.Position(*CURSOR)
        completion_id = item.command.arguments[0]
        insert(client, URI, 2, *CURSOR, item.insert_text)  # what the editor does on Tab
        assert await client.workspace_execute_command_async(types.ExecuteCommandParams("codeloop.accept", [completion_id]))
        row = wait_for_outcome(server.url, completion_id, lambda r: r["retained_latest"] is not None)
    assert row["shown"] and row["outcome"] == "accepted" and row["accepted_chars"] == len(item.insert_text)
    assert row["retained_best"] == 1.0  # nothing was edited afterwards
    assert row["language"] == "python" and row["filepath"] == "/work/project/maths.py"
    assert row["user_id"].startswith("u-") and row["client"] == "codeloop-lsp"
    assert row["prefix"].endswith("def add(a, b):\n    return")


async def test_typing_ahead_and_the_cache_answer_without_the_model(server, lsp_data):
    async with lsp_session(server.url, lsp_data) as client:
        open_doc(client, URI, CODE)
        item = await first_item(client)
        calls = (await stats(client)).model_calls
        typed = item.insert_text[:2]
        insert(client, URI, 2, *CURSOR, typed)
        again = await first_item(client, pos=(1, 10 + len(typed)))
        assert again.insert_text == item.insert_text[2:]
        assert again.command.arguments == item.command.arguments  # the same suggestion, not a new one
        after = await stats(client)
        assert after.typeahead_hits == 1 and after.model_calls == calls

        # Back to the original prompt (delete what was typed): answered from the LRU cache.
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=URI, version=3), [types.TextDocumentContentChangeWholeDocument(text=CODE)]))
        cached = await first_item(client)
        assert cached.insert_text == item.insert_text
        final = await stats(client)
        assert final.cache_hits == 1 and final.model_calls == calls


async def test_typing_over_a_suggestion_rejects_it(server, lsp_data):
    async with lsp_session(server.url, lsp_data) as client:
        open_doc(client, URI, CODE)
        item = await first_item(client)
        insert(client, URI, 2, *CURSOR, "\x01" if not item.insert_text.startswith("\x01") else "\x02")
        row = wait_for_outcome(server.url, item.command.arguments[0], lambda r: r["outcome"] == "rejected")
    assert row["shown"] and not row["accepted_chars"]


async def test_completion_fallback_and_selected_completion_info(server, lsp_data):
    async with lsp_session(server.url, lsp_data) as client:
        text = "import os\n\nfiles = os.li"
        open_doc(client, URI, text)
        result = await client.text_document_completion_async(types.CompletionParams(
            types.TextDocumentIdentifier(URI), types.Position(2, 13), context=types.CompletionContext(types.CompletionTriggerKind.Invoked)))
        assert len(result.items) == 1
        item = result.items[0]
        assert item.text_edit.new_text.startswith("li") and item.text_edit.range.start == types.Position(2, 11)
        assert item.command.command == "codeloop.accept"

        # The popup shows "listdir": the inline suggestion must extend it.
        selected = types.SelectedCompletionInfo(types.Range(types.Position(2, 11), types.Position(2, 13)), "listdir")
        inline_result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic, selected),
            text_document=types.TextDocumentIdentifier(URI), position=types.Position(2, 13)))
        assert inline_result.items, "no suggestion after the selected item"
        got = inline_result.items[0]
        assert got.insert_text.startswith("listdir") and got.range.start == types.Position(2, 11)


async def test_debounce_keeps_superseded_requests_from_the_server(server, lsp_data):
    async with lsp_session(server.url, lsp_data, {"debounceMs": 400}) as client:
        open_doc(client, URI, "x = 1\ny = ")
        first = asyncio.ensure_future(inline(client, URI, 1, 4, automatic=True))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(inline(client, URI, 1, 4, automatic=True))
        assert not (await first).items  # superseded while waiting: never sent
        await second
        s = await stats(client)
        assert s.debounced == 1 and s.model_calls == 1


async def test_a_superseded_or_cancelled_request_stops_the_engine(server, lsp_data):
    # Mid-line in a long list: the model keeps going for all of max_tokens unless stopped.
    text = "primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, "
    async with lsp_session(server.url, lsp_data, {"maxTokens": 200, "debounceMs": 0}) as client:
        open_doc(client, URI, text)
        before = metric(server.url, "codeloop_completions_total", finish_reason="cancelled")
        # 1. superseded by a newer request for the same document (the editor typed on)
        slow = asyncio.ensure_future(inline(client, URI, 0, len(text), automatic=True))
        await asyncio.sleep(1.0)  # it is generating now
        insert(client, URI, 2, 0, 0, "# ")  # an edit before its cursor: the request cannot be reused
        newer = asyncio.ensure_future(client.protocol.send_request_async("textDocument/inlineCompletion", types.InlineCompletionParams(
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic),
            text_document=types.TextDocumentIdentifier(URI), position=types.Position(0, len(text) + 2)), msg_id="to-cancel"))
        assert not (await slow).items
        # 2. the newer one cancelled by the editor with $/cancelRequest
        await asyncio.sleep(1.0)
        client.protocol.notify("$/cancelRequest", types.CancelParams(id="to-cancel"))
        with pytest.raises(Exception, match="cancel"):
            await newer
        deadline = time.monotonic() + 30
        while metric(server.url, "codeloop_completions_total", finish_reason="cancelled") < before + 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert metric(server.url, "codeloop_completions_total", finish_reason="cancelled") == before + 2
        assert (await stats(client)).cancelled == 2


async def test_a_server_that_is_down_or_slow_gives_an_empty_answer(server, lsp_data, tmp_path):
    from tests.conftest import free_port

    async with lsp_session(f"http://127.0.0.1:{free_port()}", lsp_data) as client:
        open_doc(client, URI, CODE)
        started = time.monotonic()
        assert not (await inline(client, URI, *CURSOR)).items
        assert time.monotonic() - started < 5
        assert (await stats(client)).failures == 1
    async with lsp_session(server.url, tmp_path / "slow", {"timeoutMs": 300, "maxTokens": 200}) as client:
        open_doc(client, URI, "# a long essay about numbers\n")
        started = time.monotonic()
        assert not (await inline(client, URI, 1, 0)).items
        assert time.monotonic() - started < 3


async def test_bad_requests_get_errors_and_the_server_keeps_answering(server, lsp_data):
    async with lsp_session(server.url, lsp_data) as client:
        emoji = "s = '😀'  # 中文 "
        open_doc(client, URI, emoji + "\n" + CODE)
        for uri, line, ch, message in [
            ("file:///unknown.py", 0, 0, "didOpen"),
            (URI, 99, 0, "past the end"),
            (URI, 0, 6, "inside one character"),  # between the halves of the emoji
        ]:
            with pytest.raises(Exception, match=message):
                await inline(client, uri, line, ch)
        with pytest.raises(Exception, match="unknown completion id"):
            await client.workspace_execute_command_async(types.ExecuteCommandParams("codeloop.accept", ["cmpl-nope"]))
        with pytest.raises(Exception, match="takes"):
            await client.workspace_execute_command_async(types.ExecuteCommandParams("codeloop.accept", [1, 2]))
        insert(client, "file:///never-opened.py", 2, 0, 0, "x")  # a notification: logged, no crash
        open_doc(client, "file:///huge.py", "x = 1\n" * 400_000)
        assert not (await inline(client, "file:///huge.py", 399_999, 0)).items
        # A position after emoji and CJK, in UTF-16 units, cuts the prefix at the right place.
        units = len(emoji.encode("utf-16-le")) // 2
        assert units == len(emoji) + 1
        await inline(client, URI, 0, units)
        deadline, newest = time.monotonic() + 20, {}
        while newest.get("prefix") != emoji and time.monotonic() < deadline:  # the row is written in the background
            await asyncio.sleep(0.2)
            newest = (httpx.get(server.url + "/v1/logs", params={"limit": 1}, timeout=10).json()["rows"] or [{}])[0]
        assert newest["prefix"] == emoji  # (the default model's template uses no suffix, so none is stored)
        assert (await first_item(client, pos=(2, 10))).insert_text


async def test_automatic_triggers_carry_the_latency_budget(server, lsp_data):
    """latencyBudgetMs: an automatic trigger gets what the engine generated within it; an
    explicit invocation waits longer (a second under timeoutMs)."""
    auto, invoked = "def factorial(n):\n    ", "def fibonacci(n):\n    "
    async with lsp_session(server.url, lsp_data, {"latencyBudgetMs": 100, "maxTokens": 24}) as client:
        for i, (code, automatic) in enumerate([(auto, True), (invoked, False)]):
            uri = f"file:///work/budget/m{i}.py"
            open_doc(client, uri, code)
            await inline(client, uri, 1, 4, automatic=automatic)
        hurried = logged_row(server.url, lambda r: r["prefix"] == auto)
        whole = logged_row(server.url, lambda r: r["prefix"] == invoked)
    assert hurried["finish_reason"] == "length" and hurried["completion_tokens"] < whole["completion_tokens"]


async def test_automatic_triggers_carry_the_line_budget(server, lsp_data):
    """lineBudgetMs: an automatic trigger's multi-line suggestion ends with the first line the
    server completed after it (1 ms: the first line); an explicit invocation gets the block,
    and so does an automatic trigger with the latency budget off (whole suggestions)."""
    code = "def is_prime(n: int) -> bool:\n    "
    shown = {}
    for name, options, automatic in [("auto", {"latencyBudgetMs": 60000}, True), ("invoked", {"latencyBudgetMs": 60000}, False),
                                     ("whole", {}, True)]:
        async with lsp_session(server.url, lsp_data / name, {**options, "lineBudgetMs": 1, "maxTokens": 48}) as client:
            uri = f"file:///work/line-budget/{name}.py"
            open_doc(client, uri, code)
            result = await inline(client, uri, 1, 4, automatic=automatic)
            shown[name] = result.items[0].insert_text if result.items else ""
    assert shown["auto"].strip() and "\n" not in shown["auto"].strip(), shown
    assert shown["invoked"] == shown["whole"] and shown["whole"].startswith(shown["auto"]), shown
    assert "\n" in shown["whole"].strip(), shown


async def test_an_invoked_request_is_cut_before_the_editor_gives_up(server, lsp_data):
    """The issue's case: an explicit trigger asked for more than fits in timeoutMs got nothing.
    Now the server stops a second before the timeout (timeoutMs // 2 for short ones) and
    answers what it has, cut back to whole statements. 2000 ms: the budget (1000 ms) leaves the
    server a whole second to answer, which a loaded 2-core machine needs (with 1200 ms the
    editor sometimes gave up first and nothing was logged); an argparse set-up is long enough
    not to end within 1 s (a small function like the issue's is_prime now does)."""
    code = "import argparse\n\n\ndef parse_arguments(argv: list[str]) -> argparse.Namespace:\n    "
    async with lsp_session(server.url, lsp_data, {"timeoutMs": 2000, "maxTokens": 400}) as client:
        open_doc(client, "file:///work/budget/cli.py", code)
        result = await inline(client, "file:///work/budget/cli.py", 4, 4, automatic=False)
        row = logged_row(server.url, lambda r: r["prefix"] == code)
    assert row["finish_reason"] == "length" and row["completion_tokens"] < 400
    shown = result.items[0].insert_text if result.items else ""
    assert not shown.rstrip().endswith(("for", "if", "(", "=", ",", "."))


async def test_the_event_spool_is_its_users_alone(server, lsp_data):
    """Events carry code: `codeloop lsp` keeps its spool folder 0700 and its files 0600,
    whatever the umask of the editor that started it (the test runner's here)."""
    async with lsp_session(server.url, lsp_data) as client:
        open_doc(client, URI, CODE)
        await first_item(client)
        await wait_stats(client, lambda s: s.events_sent >= 1)
    spool = lsp_data / "spool"
    written = [spool, *spool.rglob("*")]
    assert len(written) > 1, "nothing was spooled"
    for path in written:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"


async def test_configuration_changes_apply_and_bad_ones_are_refused(server, lsp_data):
    async with lsp_session(server.url, lsp_data) as client:
        open_doc(client, URI, CODE)
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams({"codeloop": {"languages": ["go"]}}))
        assert not (await inline(client, URI, *CURSOR)).items
        assert (await stats(client)).model_calls == 0
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams({"debounceMs": "soon"}))
        message = await asyncio.wait_for(client.wait_for_notification("window/showMessage"), 10)
        assert re.search("debounceMs", message.message)
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams({"languages": ["*"]}))
        assert (await inline(client, URI, *CURSOR)).items


async def test_partial_accept_and_dismiss_are_reported(server, lsp_data):
    async with lsp_session(server.url, lsp_data) as client:
        open_doc(client, URI, CODE)
        item = await first_item(client)
        assert len(item.insert_text) > 2
        insert(client, URI, 2, *CURSOR, item.insert_text[:2])  # the editor accepted a word of it
        assert await client.workspace_execute_command_async(types.ExecuteCommandParams("codeloop.accept", [item.command.arguments[0], 2]))
        partial = wait_for_outcome(server.url, item.command.arguments[0], lambda r: r["outcome"] == "partial")
        assert partial["accepted_chars"] == 2

        other = "file:///work/project/other.py"
        open_doc(client, other, "def square(x):\n    return")
        shown = (await inline(client, other, 1, 10)).items
        assert shown, "no suggestion"
        assert await client.workspace_execute_command_async(types.ExecuteCommandParams("codeloop.dismiss", shown[0].command.arguments))
        wait_for_outcome(server.url, shown[0].command.arguments[0], lambda r: r["outcome"] == "dismissed")

