"""Why the embedded engine computes in float32: the default model's prompt reading (prefill)
and per-token decoding in float32, bfloat16 and float16 on this CPU, in one run, with the
ratios to float32. Decoding is memory-bound (every weight is read per token), so half
precision halves it; prefill is compute-bound, and without bf16/fp16 matrix units it is slower.

    .venv/bin/python bench/engine_dtype.py [--prompt-tokens 360] [--new-tokens 32] [--runs 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import TEST_MODELS_DIR  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def measure(model, ids: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds per token), greedy, with a KV cache."""
    with torch.inference_mode():
        cache = DynamicCache()
        started = time.perf_counter()
        out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - started
        token = out.logits[:, -1:].argmax(-1)
        started = time.perf_counter()
        for _ in range(new_tokens):
            token = model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)
        return prefill, (time.perf_counter() - started) / new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-tokens", type=int, default=360)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from codeloop.models import prepare_default_model

    model_dir = prepare_default_model(TEST_MODELS_DIR)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = (REPO / "server" / "postprocess.py").read_text()
    ids = tokenizer(text, return_tensors="pt").input_ids[:, : args.prompt_tokens]
    print(f"{model_dir.name}; {torch.get_num_threads()} threads; prompt {ids.shape[1]} tokens; "
          f"{args.new_tokens} new tokens; median of {args.runs} runs")
    results = {}
    for name, dtype in DTYPES.items():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
        measure(model, ids[:, :16], 2)  # warm-up
        runs = [measure(model, ids, args.new_tokens) for _ in range(args.runs)]
        results[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
    base_prefill, base_decode = results["float32"]
    print(f"{'dtype':<10} {'prefill s':>10} {'x fp32':>7} {'decode ms/tok':>14} {'x fp32':>7} {'32-token answer s':>18}")
    for name, (prefill, decode) in results.items():
        total = prefill + decode * args.new_tokens
        print(f"{name:<10} {prefill:>10.2f} {prefill / base_prefill:>7.2f} {decode * 1000:>14.1f} {decode / base_decode:>7.2f} {total:>18.2f}")


if __name__ == "__main__":
    main()
