"""What a web page can make a browser send, against the real server (auth off, the default):
a rebinding page's foreign Host, a foreign Origin on routes that change state, a body that is
not typed as JSON; and one slow-to-scrub prompt that must not stop the server answering.

Real requests throughout (httpx lets a test set Host and Origin as a browser would).
"""
from __future__ import annotations

import asyncio
import socket
import time
import uuid

import httpx
import pytest


pytestmark = pytest.mark.slow


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_a_foreign_host_is_refused_so_a_rebinding_page_cannot_read_logs_or_the_export(server):
    port = port_of(server)
    for path in ("/v1/logs", "/v1/feedback/export", "/healthz", "/"):
        r = httpx.get(server.url + path, headers={"Host": f"evil.example:{port}"}, timeout=30)
        assert r.status_code == 400, (path, r.status_code, r.text[:200])
        assert "allowed_hosts" in r.json()["error"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
        r = httpx.get(server.url + "/v1/logs", headers={"Host": host}, timeout=30)
        assert r.status_code == 200, (host, r.text)


def test_a_foreign_origin_may_not_change_state(server):
    user = f"u-{uuid.uuid4().hex[:8]}"
    foreign = ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": f"http://localhost:{port_of(server) + 1}"})
    requests = [("POST", "/v1/experiments/nope/stop", None), ("DELETE", f"/v1/users/{user}", None),
                ("POST", "/v1/experiments", {"name": "x", "arms": {"base": 1, "other": 1}}),
                ("POST", "/v1/completions", {"prompt": "x = ", "max_tokens": 1, "user": user})]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for headers in foreign:
            for method, path, body in requests:
                r = client.request(method, path, json=body, headers=headers)
                assert r.status_code == 403, (method, path, headers, r.status_code, r.text)
                assert "another origin" in r.json()["error"]
        assert client.get("/v1/logs", params={"user": user}).json()["rows"] == []  # nothing was served
        # Reading stays open to pages (the answer is what CORS protects), and the server's own
        # pages (/docs) may post.
        assert client.get("/v1/adapters", headers=foreign[0]).status_code == 200
        own = client.post("/v1/completions", json={"prompt": "x = ", "max_tokens": 1},
                          headers={"Origin": server.url})
        assert own.status_code == 200, own.text


def test_a_body_not_typed_as_json_is_refused(server):
    body = b'{"prompt": "x = ", "max_tokens": 1}'
    with httpx.Client(base_url=server.url, timeout=60) as client:
        # A blob without a type (what a no-cors fetch can send): FastAPI used to parse it as JSON.
        for headers in ({}, {"content-type": "text/plain;charset=UTF-8"}, {"content-type": "multipart/form-data; boundary=x"}):
            for path in ("/v1/completions", "/v1/experiments", "/v1/events"):
                r = client.post(path, content=body, headers=headers)
                assert r.status_code == 415, (path, headers, r.status_code, r.text)
                assert "application/json" in r.json()["error"]
        assert client.post("/v1/completions", content=body, headers={"content-type": "application/json"}).status_code == 200
        typed = {"content-type": "Application/JSON; charset=utf-8"}  # any case, with parameters
        assert client.post("/v1/completions", content=body, headers=typed).status_code == 200
        # A route that needs no body needs no type (404: there is no such experiment).
        assert client.post("/v1/experiments/nope/stop").status_code == 404


def test_every_new_refusal_is_declared_in_the_openapi_document(server):
    spec = httpx.get(server.url + "/openapi.json", timeout=30).json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert "400" in op["responses"], (method, path)  # a foreign Host, on every route
            if method != "get":
                assert "403" in op["responses"], (method, path)  # a foreign Origin
            if "requestBody" in op:
                assert "415" in op["responses"], (method, path)


# The input: one line the scrubber took seconds on (cubic in the spaces: 6 s at 1000).
SLOW_TO_SCRUB = "def handler(request):\n    token:" + " " * 1400


async def _healthz_while(server, body: dict) -> tuple[int, list[float]]:
    """Send the completion and, while it is served, time /healthz every 0.1 s."""
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        task = asyncio.create_task(client.post("/v1/completions", json=body))
        waits = []
        while not task.done():
            started = time.monotonic()
            try:
                r = await client.get("/healthz", timeout=5)
                assert r.status_code == 200
                waits.append(time.monotonic() - started)
            except httpx.TimeoutException:
                waits.append(float("inf"))
            await asyncio.sleep(0.1)
        # Telemetry is recorded after the answer: keep asking until it is through.
        for _ in range(10):
            started = time.monotonic()
            r = await client.get("/healthz", timeout=5)
            waits.append(time.monotonic() - started)
        return (await task).status_code, waits


def test_healthz_answers_while_a_prompt_that_is_slow_to_scrub_is_served(server):
    user = f"u-{uuid.uuid4().hex[:8]}"
    body = {"segments": {"prefix": SLOW_TO_SCRUB, "suffix": "", "language": "python"}, "max_tokens": 2, "user": user}
    status, waits = asyncio.run(_healthz_while(server, body))
    assert status == 200
    assert max(waits) < 2.0, f"/healthz waited {max(waits):.1f} s behind one request"
    # It is recorded all the same, scrubbed off the event loop.
    for _ in range(100):
        rows = httpx.get(server.url + "/v1/logs", params={"user": user}, timeout=30).json()["rows"]
        if rows:
            break
        time.sleep(0.1)
    assert rows and "token:" in rows[0]["prefix"]


def test_the_configured_host_is_allowed_besides_loopback_names_and_addresses():
    from server.browser_guard import HostPolicy

    named = HostPolicy("codeloop.lan")
    assert named.host_allowed("codeloop.lan") and named.host_allowed("localhost") and named.host_allowed("10.0.0.5")
    assert not named.host_allowed("evil.example") and not named.host_allowed("codeloop.lan.evil.example")
    anywhere = HostPolicy("0.0.0.0")  # what colleagues type: this machine's name
    assert anywhere.host_allowed(socket.gethostname().lower()) and not anywhere.host_allowed("evil.example")
