"""Completion latency on the default model: engine alone vs. the full HTTP path, adapter load
time, time to first token, tokens/s, and 4 concurrent clients. Figures come from one run.

    .venv/bin/python bench/server_latency.py [--runs 5] [--prefix-tokens 500] [--new-tokens 32]

The HTTP figures are measured against a real `codeloop serve` process on this machine; the
engine-alone figure is the same engine class driven in this process with the same prompt.
Every request starts with its own comment line, so each one reads its whole prompt (the
embedded engine would otherwise reuse the previous, identical one).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import start_server  # noqa: E402  (reuses the test harness)


def make_prefix(tokenizer, n_tokens: int) -> str:
    """Real-looking Python whose token count is close to n_tokens, ending where code continues."""
    body, i = [], 0
    while True:
        body.append(f"def scale_{i}(values, factor={i + 2}):\n    \"\"\"Multiply every value by {i + 2}.\"\"\"\n    return [v * factor for v in values]\n\n\n")
        text = "".join(body) + "def fibonacci(n):\n"
        if len(tokenizer(text, add_special_tokens=False).input_ids) >= n_tokens:
            return text
        i += 1


def own(prefix: str, tag: str) -> str:
    """The prefix with a first line of its own: nothing to reuse from an earlier request."""
    return f"# {tag}\n{prefix}"


def with_prefix(body: dict, prefix: str) -> dict:
    return {**body, "segments": {**body["segments"], "prefix": prefix}}


def median(xs):
    return statistics.median(xs) if xs else float("nan")


async def engine_alone(model_dir: Path, prompt: str, new_tokens: int, runs: int):
    from server.engines import GenerationParams
    from server.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(model_dir)
    await engine.start()
    params = GenerationParams(max_tokens=new_tokens)
    results = [await engine.complete(own(prompt, f"run {i}"), params, None) for i in range(runs)]
    await engine.close()
    return results


def random_adapter(model_dir: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.save_pretrained(out)
    return out


async def concurrent(url: str, body: dict, prefix: str, clients: int):
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one(i: int):
            t0 = time.monotonic()
            r = await client.post("/v1/completions", json=with_prefix(body, own(prefix, f"client {i}")))
            r.raise_for_status()
            return time.monotonic() - t0, r.json()

        started = time.monotonic()
        results = await asyncio.gather(*(one(i) for i in range(clients)))
        return time.monotonic() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prefix-tokens", type=int, default=500)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from codeloop.models import prepare_default_model
    from codeloop.fim import build_prompt, get_template

    model_dir = prepare_default_model(Path(os.environ.get("CODELOOP_TEST_MODELS_DIR", REPO / ".codeloop-test" / "models")))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prefix = make_prefix(tokenizer, args.prefix_tokens)
    template = get_template("auto", "llama", tokenizer.get_vocab())
    prompt = build_prompt(template, prefix, "", tokenizer, 1536).text
    print(f"model {model_dir.name}; prompt {len(tokenizer(prompt, add_special_tokens=False).input_ids)} tokens; "
          f"{args.new_tokens} new tokens; {args.runs} runs each; {os.cpu_count()} cores")

    alone = asyncio.run(engine_alone(model_dir, prompt, args.new_tokens, args.runs))
    alone_ms = [c.engine_ms for c in alone]

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(model_dir, Path(tmp) / "data")
        try:
            body = {"segments": {"prefix": prefix, "suffix": ""}, "max_tokens": args.new_tokens, "postprocess": False}
            with httpx.Client(base_url=server.url, timeout=600) as client:
                client.post("/v1/completions", json=with_prefix(body, own(prefix, "warm-up"))).raise_for_status()
                http_ms, server_engine_ms, ttft_ms, tps = [], [], [], []
                for i in range(args.runs):
                    t0 = time.monotonic()
                    data = client.post("/v1/completions", json=with_prefix(body, own(prefix, f"run {i}"))).json()
                    http_ms.append((time.monotonic() - t0) * 1000)
                    server_engine_ms.append(data["timings"]["engine_ms"])
                    ttft_ms.append(data["timings"]["first_token_ms"])
                    tps.append(data["usage"]["completion_tokens"] / data["timings"]["engine_ms"] * 1000)
                folder = random_adapter(model_dir, server.adapters_dir / "bench-r16")
                t0 = time.monotonic()
                client.post("/v1/adapters", json={"name": "bench@1", "path": str(folder)}).raise_for_status()
                load_s = time.monotonic() - t0
                adapter_data = [client.post("/v1/completions", json={**with_prefix(body, own(prefix, f"adapter {i}")), "adapter": "bench@1"}).json()
                                for i in range(2)]
            wall, results = asyncio.run(concurrent(server.url, body, prefix, args.clients))
        finally:
            server.stop()

    overhead = [h - e for h, e in zip(http_ms, server_engine_ms)]
    print()
    print(f"{'figure':48} {'median':>10}")
    print(f"{'engine alone, in-process (ms)':48} {median(alone_ms):10.1f}")
    print(f"{'engine inside the server (ms)':48} {median(server_engine_ms):10.1f}")
    print(f"{'full HTTP request, client-side (ms)':48} {median(http_ms):10.1f}")
    print(f"{'server overhead = HTTP - engine (ms)':48} {median(overhead):10.1f}")
    print(f"{'overhead / engine time':48} {median(overhead) / median(server_engine_ms):10.2%}   (target < 5%)")
    print(f"{'HTTP / engine alone':48} {median(http_ms) / median(alone_ms):10.3f}")
    print(f"{'time to first token, base (ms)':48} {median(ttft_ms):10.1f}")
    print(f"{'tokens/s, base':48} {median(tps):10.1f}")
    print(f"{'adapter load: validate + sha256 + load, r=16 (s)':48} {load_s:10.2f}")
    a_ttft = [d["timings"]["first_token_ms"] for d in adapter_data]
    a_tps = [d["usage"]["completion_tokens"] / d["timings"]["engine_ms"] * 1000 for d in adapter_data]
    print(f"{'time to first token, adapter (ms)':48} {median(a_ttft):10.1f}")
    print(f"{'tokens/s, adapter':48} {median(a_tps):10.1f}")
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[1]["usage"]["completion_tokens"] for r in results)
    print(f"{f'{args.clients} concurrent clients: wall (s)':48} {wall:10.2f}")
    print(f"{f'{args.clients} concurrent clients: latency p50 / max (s)':48} {median(latencies):10.2f} / {latencies[-1]:.2f}")
    print(f"{f'{args.clients} concurrent clients: aggregate tokens/s':48} {tokens / wall:10.1f}")
    waited_ttft = [(r[1]["timings"]["queue_ms"] + r[1]["timings"]["first_token_ms"]) / 1000 for r in results]
    print(f"{f'{args.clients} concurrent: first token incl. queue p50/max (s)':48} {median(waited_ttft):10.2f} / {max(waited_ttft):.2f}")
    print(f"{f'{args.clients} concurrent: wall / (clients x single request)':48} {wall / (args.clients * median(http_ms) / 1000):10.2f}")


if __name__ == "__main__":
    main()
