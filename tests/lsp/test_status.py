"""`codeloop/status` (what the VS Code status bar shows) over real stdio, against the real
server on the real model: the live adapter, the user's A/B arm, today's acceptance."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import httpx
from lsprotocol import types

from tests.conftest import free_port, install_adapter
from tests.lsp.conftest import inline, insert, lsp_session, open_doc, wait_for_outcome

URI = "file:///work/project/status.py"
CODE = "def add(a, b):\n    return"
CURSOR = (1, 10)


async def status(client):
    return await client.protocol.send_request_async("codeloop/status", {})


def today_counts(url: str, adapter: str) -> tuple[int, int]:
    """Today's (UTC) shown and accepted for `adapter`, straight from the HTTP API."""
    since = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
    rows = httpx.get(url + "/v1/metrics/acceptance", params={"by": "day", "since": since, "adapter": adapter}, timeout=30).json()["rows"]
    return sum(r["shown"] for r in rows), sum(r["accepted"] for r in rows)


async def test_status_has_the_live_adapter_and_todays_acceptance(server, lsp_data):
    async with lsp_session(server.url, lsp_data, {"user": f"u-status-{uuid.uuid4().hex[:8]}"}) as client:
        before = await status(client)
        assert before.serverUrl == server.url and before.reachable and before.error is None
        assert before.adapter == "base" and before.baseModel
        assert before.experiment is None and before.arm is None  # no completion yet
        assert (before.today.shown, before.today.accepted) == today_counts(server.url, "base")
        assert before.today.adapter == "base"

        open_doc(client, URI, CODE)
        result = await inline(client, URI, *CURSOR)
        assert result.items, "the real model gave no suggestion"
        item = result.items[0]
        insert(client, URI, 2, *CURSOR, item.insert_text)
        await client.workspace_execute_command_async(types.ExecuteCommandParams("codeloop.accept", [item.command.arguments[0]]))
        wait_for_outcome(server.url, item.command.arguments[0], lambda r: r["outcome"] == "accepted")

        after = await status(client)
    assert (after.today.shown, after.today.accepted) == (before.today.shown + 1, before.today.accepted + 1)
    assert after.today.acceptanceRate == after.today.accepted / after.today.shown
    assert after.experiment is None and after.arm is None  # served outside any experiment


async def test_status_has_the_users_experiment_arm(server, lsp_data, make_adapter):
    user = f"u-status-ab-{uuid.uuid4().hex[:8]}"
    name = f"status-arm-{uuid.uuid4().hex[:6]}@1"
    folder = install_adapter(make_adapter(seed=7), server.adapters_dir, name.replace("@", "-"))
    assert httpx.post(server.url + "/v1/adapters", json={"name": name, "path": str(folder)}, timeout=120).status_code == 201
    # Only this test's user is in the experiment, so other tests on the shared server are not.
    r = httpx.post(server.url + "/v1/experiments", json={"name": "status-test", "arms": {"base": 1, name: 1}, "users": [user]}, timeout=30)
    assert r.status_code == 201, r.text
    experiment = r.json()["id"]
    try:
        async with lsp_session(server.url, lsp_data, {"user": user}) as client:
            open_doc(client, URI, CODE)
            result = await inline(client, URI, *CURSOR)
            assert result.items, "the real model gave no suggestion"
            completion_id = result.items[0].command.arguments[0]
            row = wait_for_outcome(server.url, completion_id, lambda r: r["shown"])
            got = await status(client)
        assert row["experiment"] == experiment and row["arm"] in ("base", name)
        assert got.experiment == experiment and got.arm == row["arm"]
        assert got.adapter == "base"  # the live adapter is still the base model
        assert got.today.adapter == row["arm"]  # today's rate is that of the arm this user gets
        assert (got.today.shown, got.today.accepted) == today_counts(server.url, row["arm"])
    finally:
        httpx.post(server.url + f"/v1/experiments/{experiment}/stop", timeout=30)
        httpx.delete(server.url + f"/v1/adapters/{name}", timeout=60)


async def test_status_says_when_the_server_is_unreachable(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with lsp_session(url, tmp_path / "lsp-data") as client:
        got = await status(client)
    assert got.reachable is False and got.adapter is None and got.today is None
    assert url in got.error
