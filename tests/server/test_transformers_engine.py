"""The embedded engine on a tiny randomly-initialised Llama (fast; the real model is in test_http_*)."""
from __future__ import annotations

import asyncio
import shutil

import pytest
import torch

from server.engines import EngineBusy, EngineError, GenerationParams
from server.engines.transformers_engine import TransformersEngine

GREEDY = GenerationParams(max_tokens=12)


@pytest.fixture(scope="module")
def tiny_model_dir(model_dir, tmp_path_factory):
    """A 2-layer Llama with the real tokenizer: same code paths, milliseconds per token."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)
    out = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model_dir / name, out / name)
    return out


@pytest.fixture(scope="module")
def tiny_adapters(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                               LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        path = tmp_path_factory.mktemp(f"tiny-lora-{seed}")
        model.save_pretrained(path)
        paths.append(path)
    return paths


@pytest.fixture
async def engine(tiny_model_dir):
    eng = TransformersEngine(tiny_model_dir, max_queue=4, torch_threads=1)
    await eng.start()
    yield eng
    await eng.close()


async def test_greedy_is_deterministic(engine):
    first = await engine.complete("def add(a, b):", GREEDY, None)
    second = await engine.complete("def add(a, b):", GREEDY, None)
    assert first.text == second.text
    assert first.completion_tokens == 12 and first.finish_reason == "length"
    assert first.prompt_tokens > 3 and first.engine_ms > 0 and first.first_token_ms is not None


async def test_adapters_change_output_and_unloading_restores_the_base(engine, tiny_adapters):
    base = (await engine.complete("x = ", GREEDY, None)).text
    await engine.load_adapter("a@1", tiny_adapters[0])
    await engine.load_adapter("a@2", tiny_adapters[1])
    assert engine.adapters() == ["a@1", "a@2"]
    one = (await engine.complete("x = ", GREEDY, "a@1")).text
    two = (await engine.complete("x = ", GREEDY, "a@2")).text
    assert len({base, one, two}) == 3
    assert (await engine.complete("x = ", GREEDY, None)).text == base  # adapters disabled for base
    await engine.unload_adapter("a@1")
    assert (await engine.complete("x = ", GREEDY, "a@2")).text == two
    await engine.unload_adapter("a@2")  # the last one: LoRA layers removed entirely
    assert engine.adapters() == []
    assert (await engine.complete("x = ", GREEDY, None)).text == base


async def test_names_are_immutable_and_unknown_ones_refused(engine, tiny_adapters):
    await engine.load_adapter("b@1", tiny_adapters[0])
    with pytest.raises(EngineError, match="already loaded"):
        await engine.load_adapter("b@1", tiny_adapters[1])
    with pytest.raises(EngineError, match="not loaded"):
        await engine.complete("x", GREEDY, "nope@1")
    with pytest.raises(EngineError, match="not loaded"):
        await engine.unload_adapter("nope@1")


async def test_stop_strings_end_generation(engine):
    free = await engine.complete("a", GenerationParams(max_tokens=20), None)
    stop_at = free.text[3:6]
    assert stop_at.strip(), "tiny model produced only whitespace"
    stopped = await engine.complete("a", GenerationParams(max_tokens=20, stop=(stop_at,)), None)
    assert stop_at not in stopped.text and free.text.startswith(stopped.text)
    assert stopped.finish_reason == "stop" and stopped.completion_tokens < 20


async def test_cancel_stops_generation_within_a_few_tokens(engine):
    task = asyncio.create_task(engine.complete("def", GenerationParams(max_tokens=500), None))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The next job runs only after the cancelled one has stopped.
    after = await engine.complete("def", GenerationParams(max_tokens=1), None)
    assert after.queue_ms < 2000
    (stopped_after,) = engine.cancel_stats.drain()
    assert stopped_after <= 2
    assert engine.cancel_stats.cancelled == 1
    assert 0 < engine.cancel_stats.drain_cancelled_tokens() < 500  # what it made before stopping
    assert engine.cancel_stats.drain_cancelled_tokens() == 0


async def test_queue_is_bounded(engine):
    tasks = [asyncio.create_task(engine.complete("def", GenerationParams(max_tokens=50), None)) for _ in range(8)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    busy = [r for r in results if isinstance(r, EngineBusy)]
    assert busy and "retry" in str(busy[0])
    assert sum(1 for r in results if not isinstance(r, Exception)) >= 4


async def test_cancelled_waiting_jobs_do_not_fill_the_queue(engine):
    """Jobs whose requester went away stop counting against max_queue at once."""
    running = asyncio.create_task(engine.complete("def", GenerationParams(max_tokens=500), None))
    await asyncio.sleep(0.2)
    waiting = [asyncio.create_task(engine.complete("def", GenerationParams(max_tokens=5), None)) for _ in range(engine.max_queue)]
    await asyncio.sleep(0.05)
    assert engine.queue_depth() == engine.max_queue
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert engine.queue_depth() == 0
    fresh = asyncio.create_task(engine.complete("def", GenerationParams(max_tokens=1), None))  # not refused as busy
    running.cancel()
    assert (await fresh).completion_tokens == 1
    await asyncio.gather(running, return_exceptions=True)


async def test_long_prompts_are_read_in_chunks_with_the_same_answer(engine, tiny_adapters, monkeypatch):
    from server.engines import transformers_engine

    prompt = "def add(a, b):\n    return a + b\n" * 30  # ~300 tokens: three chunks of 128
    await engine.load_adapter("c@1", tiny_adapters[0])
    whole = {}
    monkeypatch.setattr(transformers_engine, "PREFILL_CHUNK", 10_000)
    for adapter in (None, "c@1"):
        whole[adapter] = await engine.complete(prompt, GREEDY, adapter)
    monkeypatch.setattr(transformers_engine, "PREFILL_CHUNK", 128)
    engine._prefix_cache.clear()  # read the prompt again rather than reuse it
    for adapter in (None, "c@1"):
        chunked = await engine.complete(prompt, GREEDY, adapter)
        assert chunked.cached_prompt_tokens == 0
        assert chunked.prompt_tokens > 256 and chunked.text == whole[adapter].text
    assert whole[None].text != whole["c@1"].text  # the adapter was really on while reading the prompt


def test_a_job_cancelled_while_reading_the_prompt_generates_nothing(engine):
    """The worker's generation function, called directly with a job cancelled mid-prefill."""
    from server.engines.transformers_engine import _Job

    job = _Job(run=None, loop=None, future=None)
    job.cancel.set()
    result = engine._generate(job, "x = 1\n" * 100, GenerationParams(max_tokens=50), None)
    assert result.finish_reason == "cancelled" and result.completion_tokens == 0 and result.text == ""
    assert result.first_token_ms is None


# --- reusing the last prompt's KV cache ------------------------------------------------------
FILE = "def add(a, b):\n    return a + b\n\n\n" * 12  # ~170 tokens of "file above the cursor"


async def fresh(engine, prompt, adapter=None, params=GREEDY):
    """The answer with nothing reused."""
    engine._prefix_cache.clear()
    result = await engine.complete(prompt, params, adapter)
    assert result.cached_prompt_tokens == 0
    return result


async def test_a_prompt_that_extends_the_last_one_reads_only_the_new_tokens(engine):
    typed = FILE + "def mul(a, b):\n    return"
    expected = await fresh(engine, typed)
    await fresh(engine, FILE)
    reused = await engine.complete(typed, GREEDY, None)
    assert reused.text == expected.text  # same greedy answer as reading everything
    assert reused.prompt_tokens == expected.prompt_tokens
    # All of FILE's tokens but its last (whose merge with the next text may differ) at most.
    assert 0.9 * (reused.prompt_tokens - 12) <= reused.cached_prompt_tokens < reused.prompt_tokens


async def test_typing_what_was_suggested_reuses_the_generated_tokens_too(engine):
    prompt = FILE + "def mul(a, b):"
    first = await fresh(engine, prompt)
    accepted = await engine.complete(prompt + first.text, GREEDY, None)
    assert accepted.cached_prompt_tokens > first.prompt_tokens


async def test_a_prompt_that_starts_differently_reuses_nothing(engine):
    await fresh(engine, FILE)
    other = await engine.complete("import os\n" + FILE, GREEDY, None)
    assert other.cached_prompt_tokens == 0


async def test_the_cache_is_kept_per_adapter_and_dropped_when_adapters_change(engine, tiny_adapters):
    await engine.load_adapter("c@1", tiny_adapters[0])
    with_adapter = await fresh(engine, FILE, "c@1")
    await engine.complete(FILE, GREEDY, None)  # the base's keys and values for the same text
    first = await engine.complete(FILE, GREEDY, "c@1")  # must not be served from the base's
    assert first.text == with_adapter.text and first.cached_prompt_tokens > 0  # its own entry
    base = await engine.complete(FILE, GREEDY, None)
    assert base.cached_prompt_tokens > 0 and base.text != with_adapter.text
    await engine.load_adapter("c@2", tiny_adapters[1])
    assert (await engine.complete(FILE, GREEDY, None)).cached_prompt_tokens == 0
    await engine.unload_adapter("c@2")
    assert (await engine.complete(FILE, GREEDY, "c@1")).cached_prompt_tokens == 0


def test_what_a_cancelled_job_read_is_reused_by_the_next(engine, monkeypatch):
    """Cancelled after the first chunk of the prompt (a forward hook sets the cancel): the
    next request for the same prompt starts after that chunk. The worker's generation
    function is called directly."""
    from server.engines import transformers_engine
    from server.engines.transformers_engine import _Job

    monkeypatch.setattr(transformers_engine, "PREFILL_CHUNK", 64)
    engine._prefix_cache.clear()
    job = _Job(run=None, loop=None, future=None)
    hook = engine._model.register_forward_hook(lambda *args: job.cancel.set())
    try:
        cut = engine._generate(job, FILE, GREEDY, None)
    finally:
        hook.remove()
    assert cut.finish_reason == "cancelled" and cut.completion_tokens == 0
    again = engine._generate(_Job(run=None, loop=None, future=None), FILE, GREEDY, None)
    assert again.cached_prompt_tokens == 64 and again.completion_tokens == GREEDY.max_tokens


async def test_editors_typing_at_once_each_reuse_their_own_prompt(engine):
    """Two documents in turn: each prompt reuses the other's shared start only, and its own
    longer one when it comes back."""
    other = "class Point:\n    x: int\n    y: int\n\n\n" * 10
    engine._prefix_cache.clear()
    first_a = await engine.complete(FILE, GREEDY, None)
    first_b = await engine.complete(other, GREEDY, None)
    assert first_a.cached_prompt_tokens == first_b.cached_prompt_tokens == 0
    again_a = await engine.complete(FILE + "def mul(a, b):", GREEDY, None)
    again_b = await engine.complete(other + "class Line:", GREEDY, None)
    assert again_a.cached_prompt_tokens >= first_a.prompt_tokens - 2
    assert again_b.cached_prompt_tokens >= first_b.prompt_tokens - 2


async def test_a_shared_start_is_copied_when_cutting_would_lose_much(engine):
    """A prompt that shares only the file's first half with a cached one: that entry is
    copied, not cut, so its own editor still reuses all of it."""
    half = FILE[: len(FILE) // 2]
    engine._prefix_cache.clear()
    whole = await engine.complete(FILE, GREEDY, None)
    branch = await engine.complete(half + "import sys\n" * 20, GREEDY, None)
    assert 0 < branch.cached_prompt_tokens < whole.prompt_tokens // 2 + 2
    back = await engine.complete(FILE, GREEDY, None)
    assert back.cached_prompt_tokens == back.prompt_tokens - 1 and back.text == whole.text


async def test_the_prefix_cache_is_bounded_in_entries_and_bytes(engine):
    from server.engines.prefix_cache import PrefixCache

    prompts = [f"# file {i}\n" + FILE for i in range(5)]
    engine._prefix_cache = PrefixCache(max_entries=3)
    for p in prompts:
        await engine.complete(p, GREEDY, None)
    assert len(engine._prefix_cache) == 3
    assert (await engine.complete(prompts[-1], GREEDY, None)).cached_prompt_tokens > 0
    assert (await engine.complete(prompts[0], GREEDY, None)).cached_prompt_tokens < 10  # evicted
    one = engine._prefix_cache._entries[-1][3]
    assert one > 0
    engine._prefix_cache = PrefixCache(max_bytes=one + one // 2)  # room for one prompt only
    for p in prompts[:3]:
        await engine.complete(p, GREEDY, None)
    assert len(engine._prefix_cache) == 1


async def test_stop_check_ends_generation_at_a_new_line(engine):
    """stop_check sees the text so far each time a token brings a new line; True stops."""
    seen: list[str] = []

    def stop_at_second_line(text: str) -> bool:
        seen.append(text)
        return text.count("\n") >= 2

    free = await engine.complete(FILE, GenerationParams(max_tokens=40), None)
    assert free.text.count("\n") > 2  # this tiny model writes newlines after FILE
    checked = await engine.complete(FILE, GenerationParams(max_tokens=40, stop_check=stop_at_second_line), None)
    assert checked.finish_reason == "stop" and checked.completion_tokens < free.completion_tokens
    assert checked.text.count("\n") >= 2 and free.text.startswith(checked.text)
    assert seen and all("\n" in s for s in seen) and seen[-1] == checked.text


async def test_a_deadline_ends_generation_with_what_there_is(engine):
    """The deadline is checked after every token: one already past gives exactly one token;
    one far off changes nothing."""
    import time

    free = await engine.complete(FILE, GenerationParams(max_tokens=12), None)
    late = await engine.complete(FILE, GenerationParams(max_tokens=12, deadline=time.monotonic() - 1), None)
    assert late.completion_tokens == 1 and late.finish_reason == "length"
    assert free.text.startswith(late.text) and free.completion_tokens > 1
    roomy = await engine.complete(FILE, GenerationParams(max_tokens=12, deadline=time.monotonic() + 3600), None)
    assert roomy.text == free.text and roomy.completion_tokens == free.completion_tokens
