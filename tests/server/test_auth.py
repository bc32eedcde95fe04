"""Auth, token→user mapping, admin routes and the per-user rate limit, on a real server process
with the real `codeloop token` CLI writing the token file it watches."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from lsp.client import ServerClient
from tests.conftest import metric, start_server

RATE_PER_MINUTE, BURST = 1, 3  # refills one request a minute: a slow machine cannot refill mid-test


def cli(data_dir, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codeloop.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CODELOOP_CONFIG": os.devnull, "CODELOOP_DATA_DIR": str(data_dir), **(env or {})})


def new_token(data_dir, user: str, admin: bool = False) -> str:
    done = cli(data_dir, "token", "create", "--user", user, *(["--admin"] if admin else []))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def complete(server, headers=None, user="someone", max_tokens=2) -> httpx.Response:
    body = {"segments": {"prefix": "def add(a, b):\n    return", "suffix": "", "language": "python"},
            "max_tokens": max_tokens, "user": user}
    return httpx.post(server.url + "/v1/completions", json=body, headers=headers or {}, timeout=120)


def eventually(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def auth_server(model_dir, tmp_path_factory):
    """Starts with no token file (auth off); the first test creates tokens, turning auth on."""
    server = start_server(model_dir, tmp_path_factory.mktemp("auth-server"), env={
        "CODELOOP_LOG_LEVEL": "info", "CODELOOP_RATE_LIMIT_PER_MINUTE": str(RATE_PER_MINUTE), "CODELOOP_RATE_LIMIT_BURST": str(BURST)})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tokens(auth_server):
    """Creates the first tokens while the server runs: auth turns on without a restart."""
    assert "auth OFF" in auth_server.log() and "this machine only" in auth_server.log()
    assert complete(auth_server).status_code == 200  # no token file yet: open
    assert httpx.get(auth_server.url + "/healthz").json()["auth"] is False
    first = cli(auth_server.data_dir, "token", "create", "--user", "alice")
    assert first.returncode == 0, first.stderr
    # The CLI found the running server (data_dir/server.json) and checked that it turned auth on.
    assert f"checked: the server at {auth_server.url} now refuses requests without a token" in first.stderr
    made = {"alice": first.stdout.strip(), "admin": new_token(auth_server.data_dir, "ops", admin=True)}
    eventually(lambda: complete(auth_server).status_code == 401)
    assert httpx.get(auth_server.url + "/healthz").json()["auth"] is True
    return made


def test_missing_or_wrong_tokens_get_401_with_the_same_message_for_unknown_and_revoked(auth_server, tokens):
    missing = complete(auth_server)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["error"]
    bob = new_token(auth_server.data_dir, "bob")
    eventually(lambda: complete(auth_server, bearer(bob), user="bob").status_code == 200)  # picked up without a restart
    wrong = complete(auth_server, bearer(bob[:-2] + "xx"))
    token_id = bob.split("_")[1]
    revoked = cli(auth_server.data_dir, "token", "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    eventually(lambda: complete(auth_server, bearer(bob)).status_code == 401)
    after = complete(auth_server, bearer(bob))
    assert wrong.status_code == after.status_code == 401
    assert wrong.json() == after.json()  # no hint about which tokens exist
    for path in ("/v1/adapters", "/v1/metrics/acceptance", "/v1/experiments"):
        assert httpx.get(auth_server.url + path).status_code == 401
    # Health and metrics stay open for load balancers and Prometheus; the dashboard carries no data.
    assert httpx.get(auth_server.url + "/healthz").status_code == 200
    assert metric(auth_server.url, "codeloop_http_requests_total") > 0
    page = httpx.get(auth_server.url + "/")
    assert page.status_code == 200 and "Give an API token above" in page.text


def test_the_token_decides_the_user_not_the_request(auth_server, tokens):
    made = complete(auth_server, bearer(tokens["alice"]), user="mallory")
    assert made.status_code == 200, made.text
    cid = made.json()["id"]
    shown = httpx.post(auth_server.url + "/v1/events", json={"completion_id": cid, "kind": "shown"}, headers=bearer(tokens["alice"]))
    assert shown.status_code == 200, shown.text

    def recorded_user():
        rows = httpx.get(auth_server.url + "/v1/logs", params={"limit": 50}, headers=bearer(tokens["admin"])).json()["rows"]
        return next((r["user_id"] for r in rows if r["id"] == cid), None)

    eventually(lambda: recorded_user() is not None)
    assert recorded_user() == "alice"


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/v1/adapters", {"name": "x@1", "path": "nowhere"}),
    ("POST", "/v1/adapters/x@1/promote", None),
    ("DELETE", "/v1/adapters/x@1", None),
    ("POST", "/v1/experiments", {"name": "e", "arms": {"base": 1, "x@1": 1}}),
    ("POST", "/v1/experiments/nope/stop", None),
    ("GET", "/v1/feedback/export", None),
    ("GET", "/v1/logs", None),
    ("DELETE", "/v1/users/alice", None),
])
def test_admin_routes_refuse_user_tokens_and_admit_admin_tokens(auth_server, tokens, method, path, body):
    as_user = httpx.request(method, auth_server.url + path, json=body, headers=bearer(tokens["alice"]), timeout=60)
    assert as_user.status_code == 403 and "admin token" in as_user.json()["error"]
    if path == "/v1/users/alice":
        return  # an admin would really forget alice here
    as_admin = httpx.request(method, auth_server.url + path, json=body, headers=bearer(tokens["admin"]), timeout=60)
    assert as_admin.status_code not in (401, 403), as_admin.text


def test_cli_commands_send_the_api_token(auth_server, tokens):
    url = auth_server.url
    refused = cli(auth_server.data_dir, "stats", "--server", url)
    assert refused.returncode == 2 and "401" in refused.stderr and "CODELOOP_API_TOKEN" in refused.stderr
    as_user = cli(auth_server.data_dir, "forget", "--user", "nobody-here", "--server", url, env={"CODELOOP_API_TOKEN": tokens["alice"]})
    assert as_user.returncode == 2 and "403" in as_user.stderr
    as_admin = cli(auth_server.data_dir, "forget", "--user", "nobody-here", "--server", url, env={"CODELOOP_API_TOKEN": tokens["admin"]})
    assert as_admin.returncode == 1 and "nothing deleted" in as_admin.stderr  # reached the server, found nobody
    listed = cli(auth_server.data_dir, "token", "list")
    assert listed.returncode == 0 and "alice" in listed.stdout and "admin" in listed.stdout
    for secret in tokens.values():
        assert secret not in listed.stdout and secret.split("_")[2] not in listed.stdout
    shown = cli(auth_server.data_dir, "settings", env={"CODELOOP_API_TOKEN": tokens["admin"]})
    assert tokens["admin"] not in shown.stdout and "<set, not shown>" in shown.stdout


async def exhaust(server, token: str) -> list[httpx.Response]:
    """BURST + 2 requests at once: the limiter refuses before the engine is asked, so however
    slow generation is, the bucket cannot refill in between."""
    async with httpx.AsyncClient(timeout=120, headers=bearer(token)) as http:
        body = {"segments": {"prefix": "x = ", "suffix": "", "language": "python"}, "max_tokens": 1}
        answers = await asyncio.gather(*(http.post(server.url + "/v1/completions", json=body) for _ in range(BURST + 2)))
    return sorted(answers, key=lambda r: r.status_code)


async def test_per_user_rate_limit_answers_429_with_retry_after(auth_server, tokens):
    carol = new_token(auth_server.data_dir, f"carol-{uuid.uuid4().hex[:6]}")
    eventually(lambda: httpx.get(auth_server.url + "/v1/adapters", headers=bearer(carol)).status_code == 200)
    before = metric(auth_server.url, "codeloop_rate_limited_total")
    answers = await exhaust(auth_server, carol)
    codes = [r.status_code for r in answers]
    assert codes.count(200) == BURST and codes.count(429) == 2, codes
    limited = answers[-1]
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60 // RATE_PER_MINUTE + 1
    assert "rate_limit_per_minute" in limited.json()["error"]
    assert complete(auth_server, bearer(tokens["alice"]), max_tokens=1).status_code == 200  # other users are not slowed
    assert metric(auth_server.url, "codeloop_rate_limited_total") == before + 2


async def test_the_language_server_client_takes_429_as_no_suggestion_and_waits(auth_server, tokens):
    dave = new_token(auth_server.data_dir, f"dave-{uuid.uuid4().hex[:6]}")
    eventually(lambda: httpx.get(auth_server.url + "/v1/adapters", headers=bearer(dave)).status_code == 200)
    assert 429 in [r.status_code for r in await exhaust(auth_server, dave)]
    client = ServerClient(auth_server.url, dave, timeout_s=60)
    try:
        body = {"segments": {"prefix": "x = ", "suffix": "", "language": "python"}, "max_tokens": 1}
        assert await client.complete(body) is None and client.busy_answers == 1
        assert client.busy_until > time.monotonic()
        before = metric(auth_server.url, "codeloop_rate_limited_total")
        assert await client.complete(body) is None
        assert metric(auth_server.url, "codeloop_rate_limited_total") == before  # it did not ask again
    finally:
        await client.aclose()


def test_a_user_token_reports_events_only_for_its_own_completions(auth_server, tokens):
    dave, bob = new_token(auth_server.data_dir, "dave"), new_token(auth_server.data_dir, "bob")
    eventually(lambda: httpx.get(auth_server.url + "/v1/adapters", headers=bearer(bob)).status_code == 200)
    mine = complete(auth_server, bearer(dave), max_tokens=4).json()["id"]
    events = [{"completion_id": mine, "kind": "shown", "at": "2026-01-01T00:00:00Z"},
              {"completion_id": mine, "kind": "accepted", "at": "2026-01-01T00:00:01Z"}]
    stolen = httpx.post(auth_server.url + "/v1/events", json=events, headers=bearer(bob), timeout=60)
    assert stolen.status_code == 403 and "events[1] (accepted of" in stolen.json()["error"]
    assert "another user" in stolen.json()["error"]
    own = httpx.post(auth_server.url + "/v1/events", json=events, headers=bearer(dave), timeout=60)
    assert own.status_code == 200 and own.json()["stored"] == 2  # nothing of bob's batch was stored
    relayed = httpx.post(auth_server.url + "/v1/events", json=[{**events[0], "at": "2026-01-01T00:00:02Z"}],
                         headers=bearer(tokens["admin"]), timeout=60)
    assert relayed.status_code == 200  # an admin token (a relay) may report for anyone


def test_a_token_file_with_an_unknown_field_is_a_clear_refusal_not_a_crash(tmp_path):
    from server.tokens import TokenStore

    secret = new_token(tmp_path, "carol")
    path = tmp_path / "auth_tokens.json"
    data = json.loads(path.read_text())
    data["tokens"][0]["colour"] = "red"  # e.g. written by a newer codeloop
    path.write_text(json.dumps(data))
    store = TokenStore(path)
    assert store.enabled and store.check(secret) is None  # fails closed
    assert str(path) in store.problem and "colour" in store.problem
    listed = cli(tmp_path, "token", "list")
    assert listed.returncode == 2 and "cannot read" in listed.stderr and "Traceback" not in listed.stderr


def test_token_cli_refuses_bad_input(tmp_path):
    bad_user = cli(tmp_path, "token", "create", "--user", "")
    assert bad_user.returncode == 2 and "--user" in bad_user.stderr
    unknown = cli(tmp_path, "token", "revoke", "deadbeef")
    assert unknown.returncode == 2 and "no token with id" in unknown.stderr
    (tmp_path / "auth_tokens.json").write_text("not json")
    broken = cli(tmp_path, "token", "list")
    assert broken.returncode == 2 and "cannot read the token file" in broken.stderr


async def test_the_language_server_sends_its_token_setting(auth_server, tokens, tmp_path):
    from lsprotocol import types

    from tests.lsp.conftest import inline, lsp_session, open_doc, stats

    erin = new_token(auth_server.data_dir, "erin")
    uri, code = "file:///work/auth/a.py", "def add(a, b):\n    return"
    async with lsp_session(auth_server.url, tmp_path / "no-token", {"maxTokens": 2}) as client:
        open_doc(client, uri, code)
        assert not (await inline(client, uri, 1, 10)).items  # 401: no suggestion, no crash
        assert not (await inline(client, uri, 1, 10)).items
        assert (await stats(client)).events_refused == 0
        told = [m.message for m in client.messages if "refused the token" in m.message]
        assert len(told) == 1 and "Authorization: Bearer" in told[0]  # once, with the server's reason
    eventually(lambda: httpx.get(auth_server.url + "/v1/adapters", headers=bearer(erin)).status_code == 200)
    async with lsp_session(auth_server.url, tmp_path / "token", {"maxTokens": 2, "token": erin}) as client:
        open_doc(client, uri, code)
        result = await inline(client, uri, 1, 10)
        assert result.items, "no suggestion with a valid token"
        cid = result.items[0].command.arguments[0]
        assert await client.workspace_execute_command_async(types.ExecuteCommandParams("codeloop.accept", result.items[0].command.arguments))

        def outcome():
            rows = httpx.get(auth_server.url + "/v1/logs", params={"user": "erin"}, headers=bearer(tokens["admin"])).json()["rows"]
            return next((r for r in rows if r["id"] == cid), None)

        eventually(lambda: (outcome() or {}).get("outcome") == "accepted", timeout=30)
    assert outcome()["user_id"] == "erin"
