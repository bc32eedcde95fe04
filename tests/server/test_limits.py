"""Back-pressure on a real server: completions beyond max_in_flight get 429 + Retry-After (never
a 5xx, never an unbounded queue), and the server serves again once the load is gone. The same
server runs with telemetry off, where what needs the telemetry database says so."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import start_server

MAX_IN_FLIGHT = 2


@pytest.fixture(scope="module")
def limited_server(model_dir, tmp_path_factory):
    server = start_server(model_dir, tmp_path_factory.mktemp("limits") / "server",
                          env={"CODELOOP_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT), "CODELOOP_TELEMETRY": "false"})
    yield server
    server.stop()


async def test_completions_beyond_max_in_flight_get_429_with_retry_after(limited_server):
    async with httpx.AsyncClient(base_url=limited_server.url, timeout=300) as http:
        def ask(i: int):
            # Distinct users: the per-user rate limit is not what is tested here.
            return http.post("/v1/completions", json={"prompt": "def f():\n", "max_tokens": 8, "user": f"u{i}",
                                                      "postprocess": False})

        answers = await asyncio.gather(*(ask(i) for i in range(8)))
        codes = sorted(r.status_code for r in answers)
        assert set(codes) <= {200, 429} and codes.count(200) >= MAX_IN_FLIGHT and 429 in codes, codes
        busy = next(r for r in answers if r.status_code == 429)
        assert int(busy.headers["Retry-After"]) >= 1 and "retry" in busy.json()["error"]
        assert (await ask(99)).status_code == 200  # nothing stuck in flight


def test_reviews_need_telemetry_and_say_so(limited_server):
    task = {"path": "a.py", "prefix": "x = ", "suffix": "", "expected": "1", "answer_a": "1", "answer_b": "2"}
    for method, path, body in [("POST", "/v1/reviews", {"a": "base", "b": "base", "tasks": [task]}),
                               ("GET", "/v1/reviews", None), ("GET", "/v1/reviews/rev-0123456789ab/next", None)]:
        r = httpx.request(method, limited_server.url + path, json=body, params={"reviewer": "ann"} if "next" in path else None, timeout=30)
        assert r.status_code == 409 and "telemetry" in r.json()["error"], (path, r.text)
