"""Back-pressure on a real server: completions beyond max_in_flight get 429 + Retry-After (never
a 5xx, never an unbounded queue), and the server serves again once the load is gone."""
from __future__ import annotations

import asyncio

import httpx

from tests.conftest import start_server

MAX_IN_FLIGHT = 2


async def test_completions_beyond_max_in_flight_get_429_with_retry_after(model_dir, tmp_path):
    server = start_server(model_dir, tmp_path / "server", env={"CODELOOP_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
                                                                "CODELOOP_TELEMETRY": "false"})
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as http:
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
    finally:
        server.stop()
