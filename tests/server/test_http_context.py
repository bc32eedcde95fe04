"""Repository context through the real server: snippets reach the prompt within their share,
telemetry records them (`by=context`), an A/B arm can leave them out, bad snippets are 4xx."""
from __future__ import annotations

import time
import uuid

import httpx

SNIPPET = {"filepath": "billing/invoices.py",
           "text": "def compute_invoice_total_with_tax(order, tax_rate):\n    return round(order.subtotal * (1 + tax_rate), 2)\n"}
SEGMENTS = {"prefix": "from billing.invoices import compute_invoice_total_with_tax\n\n\ndef checkout(order):\n    total = ",
            "suffix": "", "language": "python", "filepath": "shop/checkout.py"}


def complete(server, user: str, snippets: list[dict], **extra) -> dict:
    body = {"segments": {**SEGMENTS, "snippets": snippets}, "max_tokens": 4, "user": user, **extra}
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def logged(server, user: str, count: int) -> list[dict]:
    for _ in range(100):
        rows = httpx.get(server.url + "/v1/logs", params={"user": user, "limit": 50}, timeout=30).json()["rows"]
        if len(rows) >= count:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"{count} completions of {user} not logged")


def by_context(server) -> dict[str, int]:
    rows = httpx.get(server.url + "/v1/metrics/acceptance", params={"by": "context"}, timeout=30).json()["rows"]
    return {r["key"]: r["completions"] for r in rows}


def test_snippets_go_into_the_prompt_and_telemetry_counts_them(server):
    user = f"ctx-{uuid.uuid4().hex[:8]}"
    before = by_context(server)
    plain = complete(server, user, [])
    with_context = complete(server, user, [SNIPPET])
    # The snippet's tokens are in the prompt the engine read.
    assert with_context["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 20
    rows = {r["id"]: r for r in logged(server, user, 2)}
    assert rows[plain["id"]]["context_snippets"] == 0 and rows[plain["id"]]["context_tokens"] == 0
    assert rows[with_context["id"]]["context_snippets"] == 1
    assert rows[with_context["id"]]["context_tokens"] == with_context["usage"]["prompt_tokens"] - plain["usage"]["prompt_tokens"]
    after = by_context(server)
    assert after.get("context", 0) - before.get("context", 0) == 1
    assert after.get("no context", 0) - before.get("no context", 0) == 1


def test_an_arm_without_context_leaves_the_snippets_out(server):
    users = [f"arm-{uuid.uuid4().hex[:6]}-{i}" for i in range(16)]
    r = httpx.post(server.url + "/v1/experiments", timeout=30, json={
        "name": "context on/off", "arms": {"base": 50, "base+no-context": 50}, "users": users})
    assert r.status_code == 201, r.text
    exp = r.json()["id"]
    try:
        answers = {u: complete(server, u, [SNIPPET]) for u in users}
        arms = {a["arm"] for a in answers.values()}
        assert arms == {"base", "base+no-context"}, arms
        for u, a in answers.items():
            row = logged(server, u, 1)[0]
            assert row["arm"] == a["arm"] and row["adapter"] is None
            assert row["context_snippets"] == (0 if a["arm"] == "base+no-context" else 1)
    finally:
        httpx.post(server.url + f"/v1/experiments/{exp}/stop", json={}, timeout=30)
    bad = httpx.post(server.url + "/v1/experiments", timeout=30,
                     json={"name": "x", "arms": {"base": 1, "nope@1+no-context": 1}, "users": ["z"]})
    assert bad.status_code == 404 and "nope@1" in bad.text


def test_bad_snippets_are_refused_with_what_to_fix(server):
    cases = [
        ([SNIPPET] * 17, "16"),
        ([{"filepath": "a.py", "text": "x" * 8001}], "8000"),
        ([{"filepath": "a.py"}], "text"),
        ([{"filepath": "a.py", "text": "x", "score": 1}], "score"),
    ]
    for snippets, needle in cases:
        r = httpx.post(server.url + "/v1/completions", timeout=30,
                       json={"segments": {**SEGMENTS, "snippets": snippets}, "max_tokens": 2})
        assert r.status_code == 422 and needle in r.text, (needle, r.text[:300])
