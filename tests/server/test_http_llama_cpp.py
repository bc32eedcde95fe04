"""`codeloop serve` with engine llama-cpp: the default model from its GGUF file, adapters
registered through the unchanged /v1/adapters API."""
from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from tests.conftest import churn_adapter, install_adapter, metric, start_server

pytest.importorskip("llama_cpp")

PROMPT = {"prefix": "def fibonacci(n):\n", "suffix": "", "language": "python"}
RAW = {"segments": PROMPT, "max_tokens": 20, "postprocess": False}


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    proc = start_server(model_dir, tmp_path_factory.mktemp("llama-cpp-server"),
                        env={"CODELOOP_ENGINE": "llama-cpp", "CODELOOP_TORCH_THREADS": "1"})
    yield proc
    proc.stop()


def post(server, path, body=None):
    return httpx.post(server.url + path, json=body, timeout=120)


def output(server, adapter=None) -> str:
    r = post(server, "/v1/completions", {**RAW, "adapter": adapter or "base"})
    assert r.status_code == 200, r.text
    assert r.json()["adapter"] == adapter
    return r.json()["choices"][0]["text"]


@pytest.fixture(scope="module")
def loaded(server, make_adapter):
    for name, seed in (("ll-a@1", 11), ("ll-b@1", 12)):
        folder = install_adapter(make_adapter(seed, scale=1.0), server.adapters_dir, name.replace("@", "-"))
        r = post(server, "/v1/adapters", {"name": name, "path": str(folder)})
        assert r.status_code == 201, r.text
    return {name: output(server, name) for name in ("ll-a@1", "ll-b@1")} | {None: output(server)}


def test_the_server_runs_llama_cpp_and_answers(server):
    health = httpx.get(server.url + "/healthz").json()
    assert health["status"] == "ok" and health["engine"] == "llama-cpp"
    r = post(server, "/v1/completions", {**RAW, "max_tokens": 8})
    data = r.json()
    assert r.status_code == 200 and data["usage"]["completion_tokens"] == 8 and data["choices"][0]["text"].strip()
    assert data["timings"]["engine_ms"] > 0 and data["timings"]["first_token_ms"] is not None


def test_completions_with_and_without_adapters_differ_and_are_stable(server, loaded):
    assert len(set(loaded.values())) == 3, loaded
    for name, text in loaded.items():
        assert output(server, name) == text
    r = post(server, "/v1/completions", {"prompt": PROMPT["prefix"], "model": "ll-b@1", "max_tokens": 20, "postprocess": False})
    assert r.json()["adapter"] == "ll-b@1" and r.json()["choices"][0]["text"] == loaded["ll-b@1"]


def test_prompt_reuse_shows_in_metrics(server):
    before = metric(server.url, "codeloop_cached_prompt_tokens_total")
    output(server)
    output(server)  # the same prompt again: all of it but the last token comes from the cache
    assert metric(server.url, "codeloop_cached_prompt_tokens_total") > before


def test_a_fim_adapter_on_the_default_models_spare_specials(server, make_adapter, smol_tokenizer):
    """An adapter trained with the smollm-fim template (<jupyter_start> ... ids 11-13): the
    prompt reaches llama.cpp with those specials as single tokens."""
    from codeloop.fim import TEMPLATES

    folder = install_adapter(make_adapter(15, scale=1.0), server.adapters_dir, "ll-fim-1")
    (folder / "codeloop.json").write_text(json.dumps({"fim_template": "smollm-fim"}))
    assert post(server, "/v1/adapters", {"name": "ll-fim@1", "path": str(folder)}).status_code == 201
    prefix, suffix = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
    r = post(server, "/v1/completions", {"segments": {"prefix": prefix, "suffix": suffix, "language": "python"},
                                         "adapter": "ll-fim@1", "max_tokens": 8, "postprocess": False})
    assert r.status_code == 200, r.text
    ids = smol_tokenizer(TEMPLATES["smollm-fim"].render(prefix, suffix), add_special_tokens=False).input_ids
    # Spelled out as text, the three specials would be ~15 tokens more (the prompt builder may
    # tidy the prefix's trailing blanks: a token or two).
    assert {11, 12, 13} <= set(ids) and abs(r.json()["usage"]["prompt_tokens"] - len(ids)) <= 2


async def test_hot_load_promote_and_unload_with_requests_in_flight(server, loaded, make_adapter):
    """Every request, whatever happens to the registry meanwhile, gets its own adapter's output."""
    folder = install_adapter(make_adapter(14, scale=1.0), server.adapters_dir, "ll-c-1")
    rng = random.Random(7)
    plan = [rng.choice([None, "ll-a@1", "ll-b@1"]) for _ in range(14)]
    async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:

        async def ask(adapter):
            return adapter, await client.post("/v1/completions", json={**RAW, "adapter": adapter or "base"})

        churn = churn_adapter(client, "ll-c@1", folder, start=0.5, pause=0.3)
        results, codes = await asyncio.gather(asyncio.gather(*(ask(a) for a in plan)), churn)
    assert codes == [201, 200, 200, 200]
    for adapter, r in results:
        assert r.status_code == 200, r.text
        assert r.json()["adapter"] == adapter and r.json()["choices"][0]["text"] == loaded[adapter], f"wrong output for {adapter}"
