"""With auth off the `user` field is the client's choice: a client that invents a user per
request still meets its address's bucket (rate_limit_users_per_address users' worth)."""
from __future__ import annotations

import asyncio

import httpx

from tests.conftest import start_server

# Refills one request a minute; every request is sent at once, so nothing refills meanwhile
# however slowly the model answers.
ENV = {"CODELOOP_RATE_LIMIT_PER_MINUTE": "1", "CODELOOP_RATE_LIMIT_BURST": "2", "CODELOOP_RATE_LIMIT_USERS_PER_ADDRESS": "2"}
USERS = ["ann", "ann", "ann", "bob", "cy", "made-up-1", "made-up-2"]


async def test_a_user_per_request_does_not_escape_the_address_bucket(model_dir, tmp_path):
    server = start_server(model_dir, tmp_path / "data", env=ENV)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
            answers = await asyncio.gather(*(client.post("/v1/completions", json={
                "prompt": "def f(x):\n    return", "max_tokens": 1, "user": user}) for user in USERS))
    finally:
        server.stop()
    codes = [r.status_code for r in answers]
    # Each user's bucket alone would let 6 through (ann 2, the others 1 each); the address
    # holds 2 users' worth: 4.
    assert codes.count(200) == 4 and codes.count(429) == 3, codes
    refused = [r for r in answers if r.status_code == 429]
    assert any("from this address" in r.json()["error"] for r in refused), [r.text for r in refused]
    assert all("rate_limit_users_per_address" in r.json()["error"] and int(r.headers["Retry-After"]) >= 1 for r in refused)
