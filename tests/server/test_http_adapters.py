"""Adapters through the HTTP API on the real server: load, promote, unload, hot-load under load."""
from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import churn_adapter, install_adapter, start_server

PROMPT = {"prefix": "def fibonacci(n):\n", "suffix": "", "language": "python"}
RAW = {"segments": PROMPT, "max_tokens": 20, "postprocess": False}


def post(server, path, body=None, timeout=120):
    return httpx.post(server.url + path, json=body, timeout=timeout)


def output(server, adapter=None):
    body = {**RAW, **({"adapter": adapter} if adapter else {})}
    r = post(server, "/v1/completions", body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def loaded(server, make_adapter):
    """Two real LoRA adapters with different weights, registered on the shared server."""
    for name, seed in (("http-a@1", 11), ("http-b@1", 12)):
        folder = install_adapter(make_adapter(seed, scale=0.5), server.adapters_dir, name.replace("@", "-"))
        r = post(server, "/v1/adapters", {"name": name, "path": str(folder)})
        assert r.status_code == 201, r.text
        info = r.json()
        assert len(info["sha256"]) == 64 and info["rank"] == 4 and info["live"] is False
    return {name: output(server, name)["choices"][0]["text"] for name in ("http-a@1", "http-b@1")} | {
        None: output(server)["choices"][0]["text"]
    }


def test_adapters_give_different_and_stable_outputs(server, loaded):
    assert len(set(loaded.values())) == 3, loaded
    for name, text in loaded.items():
        data = output(server, name)
        assert data["choices"][0]["text"] == text
        assert data["adapter"] == name
    listed = httpx.get(server.url + "/v1/adapters").json()
    assert {"http-a@1", "http-b@1"} <= {a["name"] for a in listed["adapters"]}


def test_model_field_picks_an_adapter_as_in_vllm(server, loaded):
    r = post(server, "/v1/completions", {"prompt": PROMPT["prefix"], "model": "http-b@1", "max_tokens": 20, "postprocess": False})
    assert r.json()["adapter"] == "http-b@1" and r.json()["choices"][0]["text"] == loaded["http-b@1"]


def test_promote_makes_an_adapter_live_and_base_reverts(server, loaded):
    try:
        r = post(server, "/v1/adapters/http-a@1/promote")
        assert r.status_code == 200 and r.json()["live"] == "http-a@1"
        data = output(server)
        assert data["adapter"] == "http-a@1" and data["choices"][0]["text"] == loaded["http-a@1"]
        assert output(server, "base")["choices"][0]["text"] == loaded[None]
        r = httpx.delete(server.url + "/v1/adapters/http-a@1")
        assert r.status_code == 409 and "live" in r.json()["error"]
        assert "http-a@1" in httpx.get(server.url + "/").text
    finally:
        assert post(server, "/v1/adapters/base/promote").json()["live"] is None
    assert output(server)["adapter"] is None


def test_registration_refusals(server, make_adapter, tmp_path, loaded):
    outside = make_adapter(11, scale=0.5)  # a valid adapter, but not in the server's adapter directory
    cases = [
        ({"name": "http-a@1", "path": str(server.adapters_dir / "http-a-1")}, 409, "immutable"),
        ({"name": "x@1", "path": str(outside)}, 403, "outside the adapter directory"),
        ({"name": "x@1", "path": "no-such-folder"}, 404, "no adapter folder"),
        ({"name": "bad name", "path": "http-a-1"}, 422, "bad adapter name"),
        ({"name": "x@1"}, 422, "path"),
    ]
    for body, status, needle in cases:
        r = post(server, "/v1/adapters", body)
        assert r.status_code == status, (body, r.text)
        assert needle in r.json()["error"]
    assert post(server, "/v1/adapters/nope@1/promote").status_code == 404
    assert httpx.delete(server.url + "/v1/adapters/nope@1").status_code == 404
    metrics = httpx.get(server.url + "/metrics").text
    assert 'codeloop_adapter_loads_total{result="refused"}' in metrics


def test_a_name_never_comes_back_with_other_weights(server, make_adapter):
    """After DELETE, name@N may be registered again only with the same weights."""
    first = install_adapter(make_adapter(51), server.adapters_dir, "tomb-a")
    other = install_adapter(make_adapter(52), server.adapters_dir, "tomb-b")
    assert post(server, "/v1/adapters", {"name": "tomb@1", "path": str(first)}).status_code == 201
    assert httpx.delete(server.url + "/v1/adapters/tomb@1").status_code == 200
    refused = post(server, "/v1/adapters", {"name": "tomb@1", "path": str(other)})
    assert refused.status_code == 409 and "used before for other weights" in refused.json()["error"]
    assert post(server, "/v1/adapters", {"name": "tomb@1", "path": str(first)}).status_code == 201  # the same bytes: fine
    assert httpx.delete(server.url + "/v1/adapters/tomb@1").status_code == 200


def test_a_codeloop_json_broken_after_registration_is_not_a_500(server, make_adapter):
    """promote re-reads codeloop.json (the trainer adds its figures): one that is no longer an
    object is ignored, not shown, so listing the adapters does not fail."""
    folder = install_adapter(make_adapter(53), server.adapters_dir, "meta-a")
    assert post(server, "/v1/adapters", {"name": "meta@1", "path": str(folder)}).status_code == 201
    try:
        (folder / "codeloop.json").write_text("[1, 2]")
        assert post(server, "/v1/adapters/meta@1/promote").status_code == 200
        listed = httpx.get(server.url + "/v1/adapters", timeout=30)
        assert listed.status_code == 200, listed.text
    finally:
        assert post(server, "/v1/adapters/base/promote").status_code == 200
        assert httpx.delete(server.url + "/v1/adapters/meta@1", timeout=120).status_code == 200


def test_adapter_for_another_base_model_is_refused(server, make_adapter):
    folder = install_adapter(make_adapter(13), server.adapters_dir, "other-base")
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = "Qwen/Qwen2.5-Coder-1.5B"
    config_file.write_text(json.dumps(config))
    r = post(server, "/v1/adapters", {"name": "other@1", "path": str(folder)})
    assert r.status_code == 422 and "Qwen/Qwen2.5-Coder-1.5B" in r.json()["error"]


async def test_hot_load_promote_and_unload_with_requests_in_flight(server, loaded, make_adapter):
    """Every request, whatever happens to the registry meanwhile, gets its own adapter's output."""
    folder = install_adapter(make_adapter(14, scale=0.5), server.adapters_dir, "http-c-1")
    rng = random.Random(7)
    plan = [rng.choice([None, "http-a@1", "http-b@1"]) for _ in range(14)]
    async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:

        async def ask(adapter):
            body = {**RAW, **({"adapter": adapter} if adapter else {"adapter": "base"})}
            r = await client.post("/v1/completions", json=body)
            return adapter, r

        churn = churn_adapter(client, "http-c@1", folder, start=0.5, pause=0.3)
        results, codes = await asyncio.gather(asyncio.gather(*(ask(a) for a in plan)), churn)
    assert codes == [201, 200, 200, 200]
    for adapter, r in results:
        assert r.status_code == 200, r.text
        assert r.json()["adapter"] == adapter
        assert r.json()["choices"][0]["text"] == loaded[adapter], f"wrong output for {adapter}"
    assert "http-c@1" not in {a["name"] for a in httpx.get(server.url + "/v1/adapters").json()["adapters"]}


def test_adapters_and_live_pointer_survive_a_restart(model_dir, make_adapter, tmp_path):
    first = start_server(model_dir, tmp_path / "data")
    try:
        folder = install_adapter(make_adapter(11, scale=0.5), first.adapters_dir, "keep")
        assert post(first, "/v1/adapters", {"name": "keep@1", "path": str(folder)}).status_code == 201
        assert post(first, "/v1/adapters/keep@1/promote").status_code == 200
        expected = output(first)["choices"][0]["text"]
    finally:
        # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -15, not a crash.
        assert first.stop() in (0, -signal.SIGTERM)
    second = start_server(model_dir, tmp_path / "data")
    try:
        listed = httpx.get(second.url + "/v1/adapters").json()
        assert listed["live"] == "keep@1" and [a["name"] for a in listed["adapters"]] == ["keep@1"]
        assert output(second)["choices"][0]["text"] == expected
    finally:
        second.stop()
    # The registered folder changed while the server was down: the server loads its own copy,
    # so keep@1 still answers with the weights it was registered with.
    store = Path(listed["adapters"][0]["store"])
    assert store.parent.name == ".store" and store.name == listed["adapters"][0]["sha256"]
    (folder / "adapter_model.safetensors").write_bytes((folder / "adapter_model.safetensors").read_bytes()[:-8] + b"\0" * 8)
    third = start_server(model_dir, tmp_path / "data")
    try:
        assert [a["name"] for a in httpx.get(third.url + "/v1/adapters").json()["adapters"]] == ["keep@1"]
        assert output(third)["choices"][0]["text"] == expected
    finally:
        third.stop()
    # The copy gone as well: not loaded again, and the log says why.
    shutil.rmtree(store)
    third = start_server(model_dir, tmp_path / "data")
    try:
        assert httpx.get(third.url + "/v1/adapters").json()["adapters"] == []
        assert "sha256 differs" in third.log()
        # ...and the name keeps meaning the weights it was registered with.
        again = post(third, "/v1/adapters", {"name": "keep@1", "path": str(folder)})
        assert again.status_code == 409 and "used before for other weights" in again.json()["error"]
        assert "keep@2" in again.json()["error"]
    finally:
        third.stop()
