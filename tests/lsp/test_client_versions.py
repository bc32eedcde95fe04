"""The language server's HTTP client against a completion server from before line_latency_ms.

The older server is a stand-in: a real HTTP server on a real socket that refuses the field
with the error the real server's schema gives for a field it does not know (checked below
against the real schema), and answers requests without it."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from lsp.client import ServerClient
from server.schemas import CompletionRequest
from tests.conftest import send_json

BODY = {"segments": {"prefix": "def f(n):\n    ", "suffix": ""}, "max_tokens": 16, "line_latency_ms": 250}


class OlderServer(BaseHTTPRequestHandler):
    bodies: list[dict] = []
    refusal = "line_latency_ms: Extra inputs are not permitted"

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        OlderServer.bodies.append(body)
        if "line_latency_ms" in body:
            status, answer = 422, {"error": OlderServer.refusal}
        else:
            status, answer = 200, {"id": "cmpl-1", "choices": [{"text": "return n", "finish_reason": "stop"}]}
        send_json(self, status, answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def older_server():
    OlderServer.bodies, OlderServer.refusal = [], "line_latency_ms: Extra inputs are not permitted"
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), OlderServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_the_stand_in_refuses_as_the_real_schema_refuses_a_field_it_does_not_know():
    CompletionRequest(**BODY)  # today's server takes it
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        CompletionRequest(**{**BODY, "not_a_field": 1})


async def test_an_older_server_gets_requests_without_the_line_budget(older_server):
    problems = []
    client = ServerClient(older_server, None, 5.0, on_problem=problems.append)
    try:
        first = await client.complete(dict(BODY))
        second = await client.complete(dict(BODY))
    finally:
        await client.aclose()
    assert first is not None and first.text == "return n" and second is not None
    # Asked once with the field; never again after the refusal; the user is not told of it.
    assert ["line_latency_ms" in b for b in OlderServer.bodies] == [True, False, False]
    assert problems == []


async def test_a_bad_value_is_not_taken_for_an_older_server(older_server):
    """A 422 about the field's value (not about an unknown field) keeps it in later requests."""
    OlderServer.refusal = "line_latency_ms: Input should be greater than or equal to 1"
    client = ServerClient(older_server, None, 5.0)
    try:
        assert await client.complete(dict(BODY)) is None
        await client.complete(dict(BODY))
    finally:
        await client.aclose()
    assert ["line_latency_ms" in b for b in OlderServer.bodies] == [True, True]
