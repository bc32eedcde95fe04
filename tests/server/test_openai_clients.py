"""OpenAI-style clients: GET /v1/models and stream=true, with the official `openai` client
against the real server (the session's, on the real default model)."""
from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import install_adapter, metric

PROMPT = "def fibonacci(n):\n"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused-while-auth-is-off", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def listed_adapter(server, make_adapter):
    folder = install_adapter(make_adapter(31), server.adapters_dir, "oai-listed-1")
    r = httpx.post(server.url + "/v1/adapters", json={"name": "oai-listed@1", "path": str(folder)}, timeout=120)
    assert r.status_code in (201, 409), r.text
    return "oai-listed@1"


def test_models_lists_the_base_model_and_the_adapters_as_vllm_does(client, listed_adapter):
    models = {m.id: m for m in client.models.list().data}
    base = models["SmolLM2-135M-Instruct"]
    assert base.object == "model" and base.owned_by == "codeloop" and base.created > 0
    assert listed_adapter in models
    assert models[listed_adapter].model_extra["parent"] == "SmolLM2-135M-Instruct"


def test_each_listed_model_answers_completions(client, listed_adapter):
    for model in ("SmolLM2-135M-Instruct", listed_adapter):
        answer = client.completions.create(model=model, prompt=PROMPT, max_tokens=24)
        assert answer.model == model and answer.choices[0].text.strip(), answer
        assert answer.model_extra["adapter"] == (None if model.startswith("SmolLM2") else model)


def test_stream_gives_the_same_suggestion_as_server_sent_events(client):
    whole = client.completions.create(model="base", prompt=PROMPT, max_tokens=24)
    chunks = list(client.completions.create(model="base", prompt=PROMPT, max_tokens=24, stream=True))
    assert len(chunks) == 2
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text != ""
    assert chunks[0].choices[0].finish_reason is None
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_a_streaming_client_that_goes_away_stops_the_generation(server):
    body = {"prompt": "# The first 500 prime numbers\nPRIMES = [2, 3, 5,", "max_tokens": 400, "postprocess": False,
            "stream": True}
    cancelled = metric(server.url, "codeloop_completions_total", adapter="base", finish_reason="cancelled")
    with pytest.raises(httpx.ReadTimeout):
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=2.0) as response:
            response.read()
    deadline = time.monotonic() + 30
    while metric(server.url, "codeloop_completions_total", adapter="base", finish_reason="cancelled") == cancelled:
        assert time.monotonic() < deadline, "the generation was not cancelled"
        time.sleep(0.2)


def test_a_refused_stream_is_a_plain_http_error(server):
    r = httpx.post(server.url + "/v1/completions", json={"prompt": PROMPT, "model": "no-such@1", "stream": True}, timeout=60)
    assert r.status_code == 404 and "unknown adapter" in r.json()["error"]
