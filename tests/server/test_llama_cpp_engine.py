"""The llama.cpp engine on the default model's own GGUF file (135M, Q4_1: fast enough to test
on directly), with real PEFT adapters converted to GGUF LoRA."""
from __future__ import annotations

import asyncio
import random
import time

import pytest

from server.engines import EngineBusy, EngineError, GenerationParams

pytest.importorskip("llama_cpp")

GREEDY = GenerationParams(max_tokens=12)
FIB = "def fibonacci(n):\n"
FILE = "def add(a, b):\n    return a + b\n\n\n" * 12  # ~170 tokens of "file above the cursor"
# ~370 tokens (three prompt chunks) after which the adapters below answer differently.
LONG = "".join(f"def f{i}(x):\n    return x * {i} + {i * i % 7}\n\n\n" for i in range(20)) + FIB


@pytest.fixture(scope="module")
def gguf(model_dir):
    from codeloop.models import gguf_for_model

    return gguf_for_model(model_dir)


@pytest.fixture(params=["plain", "amx"])
async def engine(request, model_dir, gguf, smol_tokenizer):
    """The engine as served on a CPU without AMX ("plain": one copy of the weights) and with
    it ("amx": tokens generated one at a time from a second copy in llama.cpp's AMX layout,
    prompts read in batches from the plain one, the sequence copied between the two)."""
    from server.engines.llama_cpp_amx import amx_buffer_type
    from server.engines.llama_cpp_engine import LlamaCppEngine

    if request.param == "amx" and amx_buffer_type() is None:
        pytest.skip("this CPU (or this build of llama.cpp) has no AMX weight layout")
    eng = LlamaCppEngine(model_dir, gguf, smol_tokenizer, max_queue=4, threads=1, n_ctx=2048,
                         step_gguf=gguf if request.param == "amx" else None)
    await eng.start()
    yield eng
    await eng.close()


@pytest.fixture(scope="module")
def adapters(make_adapter):
    """Two real adapters for the default model whose greedy answers to FIB, FILE + FIB and
    LONG differ from each other and from the base's (not to FILE alone: too repetitive)."""
    return [make_adapter(11, scale=1.0), make_adapter(12, scale=1.0)]


async def test_greedy_is_deterministic(engine):
    first = await engine.complete(FIB, GREEDY, None)
    second = await engine.complete(FIB, GREEDY, None)
    assert first.text == second.text and first.text.strip()
    assert first.completion_tokens == 12 and first.finish_reason == "length"
    assert first.prompt_tokens > 3 and first.engine_ms > 0 and first.first_token_ms is not None


async def test_seeded_sampling_is_reproducible(engine):
    sampled = GenerationParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=5)
    one = await engine.complete(FIB, sampled, None)
    assert (await engine.complete(FIB, sampled, None)).text == one.text
    others = {(await engine.complete(FIB, GenerationParams(max_tokens=16, temperature=1.0, seed=s), None)).text for s in (6, 7, 8)}
    assert len(others | {one.text}) > 1


async def test_adapters_change_output_and_unloading_restores_the_base(engine, adapters):
    base = (await engine.complete(FIB, GREEDY, None)).text
    await engine.load_adapter("a@1", adapters[0])
    await engine.load_adapter("a@2", adapters[1])
    assert engine.adapters() == ["a@1", "a@2"]
    one = (await engine.complete(FIB, GREEDY, "a@1")).text
    two = (await engine.complete(FIB, GREEDY, "a@2")).text
    assert len({base, one, two}) == 3
    assert (await engine.complete(FIB, GREEDY, None)).text == base  # no adapter for the base
    await engine.unload_adapter("a@1")
    assert (await engine.complete(FIB, GREEDY, "a@2")).text == two
    await engine.unload_adapter("a@2")
    assert engine.adapters() == []
    assert (await engine.complete(FIB, GREEDY, None)).text == base


async def test_names_are_immutable_and_bad_adapters_refused(engine, adapters, make_adapter, tmp_path):
    import json
    import shutil

    await engine.load_adapter("b@1", adapters[0])
    with pytest.raises(EngineError, match="already loaded"):
        await engine.load_adapter("b@1", adapters[1])
    with pytest.raises(EngineError, match="not loaded"):
        await engine.complete("x", GREEDY, "nope@1")
    with pytest.raises(EngineError, match="not loaded"):
        await engine.unload_adapter("nope@1")
    dora = shutil.copytree(adapters[1], tmp_path / "dora")
    config = json.loads((dora / "adapter_config.json").read_text()) | {"use_dora": True}
    (dora / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(EngineError, match="DoRA"):
        await engine.load_adapter("dora@1", dora)
    assert engine.adapters() == ["b@1"] and (await engine.complete(FIB, GREEDY, "b@1")).completion_tokens == 12


async def test_stop_strings_end_generation(engine):
    free = await engine.complete(FIB, GenerationParams(max_tokens=20), None)
    stop_at = free.text.strip()[2:5]
    assert stop_at.strip()
    stopped = await engine.complete(FIB, GenerationParams(max_tokens=20, stop=(stop_at,)), None)
    assert stop_at not in stopped.text and free.text.startswith(stopped.text)
    assert stopped.finish_reason == "stop" and stopped.completion_tokens < 20


async def test_stop_check_ends_generation_at_a_new_line(engine):
    seen: list[str] = []

    def stop_at_second_line(text: str) -> bool:
        seen.append(text)
        return text.count("\n") >= 2

    free = await engine.complete(FILE, GenerationParams(max_tokens=30), None)
    assert free.text.count("\n") > 2  # the model writes more functions after FILE
    checked = await engine.complete(FILE, GenerationParams(max_tokens=30, stop_check=stop_at_second_line), None)
    assert checked.finish_reason == "stop" and checked.completion_tokens < free.completion_tokens
    assert checked.text.count("\n") >= 2 and free.text.startswith(checked.text)
    assert seen and all("\n" in s for s in seen) and seen[-1] == checked.text


async def test_a_deadline_ends_generation_with_what_there_is(engine):
    free = await engine.complete(FILE, GREEDY, None)
    late = await engine.complete(FILE, GenerationParams(max_tokens=12, deadline=time.monotonic() - 1), None)
    assert late.completion_tokens == 1 and late.finish_reason == "length" and free.text.startswith(late.text)
    roomy = await engine.complete(FILE, GenerationParams(max_tokens=12, deadline=time.monotonic() + 3600), None)
    assert roomy.text == free.text and roomy.completion_tokens == free.completion_tokens


async def test_cancel_stops_generation_within_a_few_tokens(engine):
    await engine.complete(FILE, GenerationParams(max_tokens=1), None)  # read: the next one generates at once
    task = asyncio.create_task(engine.complete(FILE, GenerationParams(max_tokens=500), None))  # no early EOS
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = await engine.complete("def", GenerationParams(max_tokens=1), None)  # runs once the cancelled one stopped
    assert after.queue_ms < 2000
    (stopped_after,) = engine.cancel_stats.drain()
    assert stopped_after <= 2 and engine.cancel_stats.cancelled == 1
    assert 0 < engine.cancel_stats.drain_cancelled_tokens() < 500


async def test_queue_is_bounded_and_cancelled_waiting_jobs_leave_it(engine):
    tasks = [asyncio.create_task(engine.complete("def", GenerationParams(max_tokens=10), None)) for _ in range(7)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    busy = [r for r in results if isinstance(r, EngineBusy)]
    assert busy and "retry" in str(busy[0]) and sum(1 for r in results if not isinstance(r, Exception)) >= 4
    running = asyncio.create_task(engine.complete(FILE, GenerationParams(max_tokens=500), None))
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


async def test_long_prompts_are_read_in_chunks_with_the_same_answer(engine, adapters, monkeypatch):
    from server.engines import llama_cpp_engine

    prompt = LONG
    await engine.load_adapter("c@1", adapters[0])
    whole = {}
    monkeypatch.setattr(llama_cpp_engine, "PREFILL_CHUNK", 512)
    for adapter in (None, "c@1"):
        whole[adapter] = await engine.complete(prompt, GREEDY, adapter)
    monkeypatch.setattr(llama_cpp_engine, "PREFILL_CHUNK", 128)
    for adapter in (None, "c@1"):
        engine._kv.clear()  # read the prompt again rather than reuse it
        chunked = await engine.complete(prompt, GREEDY, adapter)
        assert chunked.cached_prompt_tokens == 0
        assert chunked.prompt_tokens > 256 and chunked.text == whole[adapter].text
    assert whole[None].text != whole["c@1"].text  # the adapter was really on while reading the prompt


def test_a_job_cancelled_while_reading_the_prompt_generates_nothing(engine):
    """The worker's generation function, called directly with a job cancelled mid-prefill."""
    from server.engines.worker import Job

    job = Job(run=None, loop=None, future=None)
    job.cancel.set()
    result = engine._generate(job, "x = 1\n" * 100, GenerationParams(max_tokens=50), None)
    assert result.finish_reason == "cancelled" and result.completion_tokens == 0 and result.text == ""
    assert result.first_token_ms is None


def test_a_prompt_longer_than_the_context_is_refused(engine):
    from server.engines.worker import Job

    with pytest.raises(EngineError, match="context holds"):
        engine._generate(Job(run=None, loop=None, future=None), "x = 1\n" * 1000, GREEDY, None)


# --- reusing recent prompts' KV caches -------------------------------------------------------
async def fresh(engine, prompt, adapter=None, params=GREEDY):
    """The answer with nothing reused."""
    engine._kv.clear()
    result = await engine.complete(prompt, params, adapter)
    assert result.cached_prompt_tokens == 0
    return result


async def test_a_prompt_that_extends_the_last_one_reads_only_the_new_tokens(engine):
    typed = FILE + "def mul(a, b):\n    return"
    expected = await fresh(engine, typed)
    await fresh(engine, FILE)
    reused = await engine.complete(typed, GREEDY, None)
    assert reused.text == expected.text and reused.prompt_tokens == expected.prompt_tokens
    assert 0.9 * (reused.prompt_tokens - 12) <= reused.cached_prompt_tokens < reused.prompt_tokens


async def test_typing_what_was_suggested_reuses_the_generated_tokens_too(engine):
    prompt = FILE + "def mul(a, b):"
    first = await fresh(engine, prompt)
    accepted = await engine.complete(prompt + first.text, GREEDY, None)
    assert accepted.cached_prompt_tokens > first.prompt_tokens


async def test_a_prompt_that_starts_differently_reuses_nothing(engine):
    await fresh(engine, FILE)
    assert (await engine.complete("import os\n" + FILE, GREEDY, None)).cached_prompt_tokens == 0


async def test_reuse_is_per_adapter_and_an_unloaded_adapters_is_dropped(engine, adapters):
    prompt = FILE + FIB
    await engine.load_adapter("c@1", adapters[0])
    with_adapter = await fresh(engine, prompt, "c@1")
    base = await engine.complete(prompt, GREEDY, None)  # the base's keys and values for the same text
    assert base.cached_prompt_tokens == 0 and base.text != with_adapter.text
    again = await engine.complete(prompt, GREEDY, "c@1")  # its own snapshot, not the base's
    assert again.text == with_adapter.text and again.cached_prompt_tokens == again.prompt_tokens - 1
    await engine.load_adapter("c@2", adapters[1])  # loading another changes nothing here
    assert (await engine.complete(prompt, GREEDY, None)).cached_prompt_tokens > 0
    await engine.unload_adapter("c@1")
    await engine.load_adapter("c@1", adapters[1])  # the name again, other weights (only once unloaded)
    assert (await engine.complete(prompt, GREEDY, "c@1")).cached_prompt_tokens == 0


def test_what_a_cancelled_job_read_is_reused_by_the_next(engine, monkeypatch):
    """Cancelled after the first chunk of the prompt (set from the model's decode): the next
    request for the same prompt starts after that chunk."""
    from server.engines import llama_cpp_engine
    from server.engines.worker import Job

    monkeypatch.setattr(llama_cpp_engine, "PREFILL_CHUNK", 64)
    engine._kv.clear()
    job = Job(run=None, loop=None, future=None)
    decode = engine._model.decode

    def decode_then_cancel(*args, **kwargs):
        result = decode(*args, **kwargs)
        job.cancel.set()
        return result

    monkeypatch.setattr(engine._model, "decode", decode_then_cancel)
    cut = engine._generate(job, FILE, GREEDY, None)
    monkeypatch.setattr(engine._model, "decode", decode)
    assert cut.finish_reason == "cancelled" and cut.completion_tokens == 0
    again = engine._generate(Job(run=None, loop=None, future=None), FILE, GREEDY, None)
    assert again.cached_prompt_tokens == 64 and again.completion_tokens == GREEDY.max_tokens


async def test_editors_typing_at_once_each_reuse_their_own_prompt(engine):
    other = "class Point:\n    x: int\n    y: int\n\n\n" * 10
    engine._kv.clear()
    first_a = await engine.complete(FILE, GREEDY, None)
    first_b = await engine.complete(other, GREEDY, None)
    assert first_a.cached_prompt_tokens == first_b.cached_prompt_tokens == 0
    again_a = await engine.complete(FILE + "def mul(a, b):", GREEDY, None)
    again_b = await engine.complete(other + "class Line:", GREEDY, None)
    assert again_a.cached_prompt_tokens >= first_a.prompt_tokens - 2
    assert again_b.cached_prompt_tokens >= first_b.prompt_tokens - 2


async def test_a_shared_start_is_kept_whole_when_cutting_would_lose_much(engine):
    half = FILE[: len(FILE) // 2]
    engine._kv.clear()
    whole = await engine.complete(FILE, GREEDY, None)
    branch = await engine.complete(half + "import sys\n" * 20, GREEDY, None)
    assert 0 < branch.cached_prompt_tokens < whole.prompt_tokens // 2 + 2
    back = await engine.complete(FILE, GREEDY, None)
    assert back.cached_prompt_tokens == back.prompt_tokens - 1 and back.text == whole.text


async def test_the_snapshots_are_bounded_in_entries_and_bytes(engine):
    from server.engines.llama_cpp_cache import KvReuse

    prompts = [f"# file {i}\n" + FILE for i in range(5)]
    engine._kv = KvReuse(engine._model, max_entries=2)
    for p in prompts:
        await engine.complete(p, GREEDY, None)
    assert len(engine._kv) == 3  # two snapshots and the live one
    assert (await engine.complete(prompts[-2], GREEDY, None)).cached_prompt_tokens > 0
    assert (await engine.complete(prompts[0], GREEDY, None)).cached_prompt_tokens < 10  # evicted
    one = engine._kv.saved_bytes() // 2
    engine._kv = KvReuse(engine._model, max_bytes=one + one // 2)  # room for one snapshot only
    for p in prompts[:4]:
        await engine.complete(p, GREEDY, None)
    assert len(engine._kv) == 2


# --- adapters switched per request, under load ------------------------------------------------
async def test_requests_interleaved_with_loads_and_unloads_each_get_their_own_adapter(engine, adapters, make_adapter):
    """Every request gets exactly its own adapter's answer (or the base's), whatever is loaded
    or unloaded meanwhile; the snapshots of each adapter stay apart."""
    await engine.load_adapter("x@1", adapters[0])
    await engine.load_adapter("y@1", adapters[1])
    prompts = [FIB, FILE + FIB]
    expected = {}
    for prompt in prompts:
        for adapter in (None, "x@1", "y@1"):
            expected[prompt, adapter] = (await fresh(engine, prompt, adapter)).text
    assert all(len({expected[p, a] for a in (None, "x@1", "y@1")}) == 3 for p in prompts)
    rng = random.Random(3)
    plan = [(rng.choice(prompts), rng.choice([None, "x@1", "y@1"])) for _ in range(16)]
    churn_adapter = make_adapter(14, scale=1.0)

    async def churn():
        for _ in range(2):
            await asyncio.sleep(0.2)
            await engine.load_adapter("z@1", churn_adapter)
            await asyncio.sleep(0.2)
            await engine.unload_adapter("z@1")

    async def ask(prompt, adapter):
        return prompt, adapter, await engine.complete(prompt, GREEDY, adapter)

    engine.max_queue = engine._worker.max_queue = 32
    results = await asyncio.gather(churn(), *(ask(p, a) for p, a in plan))
    for prompt, adapter, result in results[1:]:
        assert result.adapter == adapter and result.text == expected[prompt, adapter], f"wrong output for {adapter}"
    assert sum(r[2].cached_prompt_tokens > 0 for r in results[1:]) > 0
    assert engine.adapters() == ["x@1", "y@1"]


# --- a GGUF file named in settings ------------------------------------------------------------
@pytest.fixture
def settings_env(monkeypatch, tmp_path):
    import os

    for key in list(os.environ):
        if key.startswith("CODELOOP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CODELOOP_CONFIG", os.devnull)
    monkeypatch.setenv("CODELOOP_DATA_DIR", str(tmp_path))


async def test_a_gguf_file_without_a_folder_is_served_with_its_own_vocabulary(settings_env, gguf, model_dir, tmp_path):
    """`model = "/models/x.gguf"`: the tokenizer comes from the GGUF (transformers builds it
    from the file's vocabulary), and answers are the same as with the converted folder's."""
    from codeloop.models import resolve_model
    from codeloop.settings import load_settings
    from server.engines import make_engine

    settings = load_settings(model=str(gguf), engine="llama-cpp", torch_threads=1)
    served = resolve_model(settings.model, settings.models_dir)
    assert served == gguf
    engine = make_engine(settings, served)
    assert engine.model_name == gguf.stem and engine.model_type == "llama"
    await engine.start()
    try:
        from_file = await engine.complete(FILE + FIB, GREEDY, None)
    finally:
        await engine.close()
    # The folder's own GGUF as shipped (the default, q8_0, would serve a Q8_0 copy of it).
    folder = make_engine(load_settings(engine="llama-cpp", torch_threads=1, gguf_quant="as-shipped"), model_dir)
    await folder.start()
    try:
        assert (await folder.complete(FILE + FIB, GREEDY, None)).text == from_file.text
    finally:
        await folder.close()


def test_settings_and_models_say_what_a_gguf_needs(settings_env, gguf, tmp_path):
    from codeloop.models import ModelError, describe_model_folder, gguf_for_model
    from codeloop.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="only engine 'llama-cpp'"):
        load_settings(model=str(gguf), engine="transformers")  # which cannot read it
    folder = tmp_path / "hf-folder"
    folder.mkdir()
    with pytest.raises(ModelError, match="holds none"):
        gguf_for_model(folder)
    assert describe_model_folder(gguf).startswith(f"GGUF file {gguf}: llama, vocabulary 49152")
