"""The embedded engines on the default model, in one run: transformers (fp32,
the converted folder) against llama.cpp on the model's own GGUF (Q4_1 as shipped) and on
copies of it written as Q8_0 (what the engine serves by default), F16 and F32 (same weights,
dequantized once; codeloop/gguf_requant.py), or written by llama.cpp's own quantizer from the
F32 copy (Q4_0, Q5_0, IQ4_NL: other 4- and 5-bit layouts, measured for speed; the K-quants need
rows of a multiple of 256 and this model's are 576 wide), and Q8_0+AMX: what the server runs
on a CPU with AMX (amx_decode), the prompt read from Q8_0 and tokens generated from the shipped
Q4_1 in llama.cpp's AMX layout. Reading the prompt and decoding are timed separately; each
answer is compared with transformers' (same greedy text or not).

    .venv/bin/python bench/engine_llama_cpp.py [--rounds 3] [--prefix-tokens 500] [--new-tokens 32]
        [--threads 1] [--formats Q4_1 Q8_0 Q8_0+AMX F16 F32 Q4_0 Q5_0 IQ4_NL]

Each round asks every engine in turn, each in a fresh process of its own (so load from other
processes spreads over all of them, and no engine slows another down in a shared process),
for the same prompt with nothing reused (cache emptied): prompt read = time to the first
token; decode = tokens/s after it. Then the same prompt with a line typed at its end, the
previous prompt's KV cache reused: time to the first token when typing. Medians over rounds,
and each figure as a ratio to transformers.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.server_latency import make_prefix  # noqa: E402
from codeloop.gguf_requant import write_gguf_as  # noqa: E402
from server.engines import GenerationParams  # noqa: E402

TYPED = "    if n < 2:\n"
# Formats written by llama.cpp's quantizer (its LLAMA_FTYPE_MOSTLY_* numbers).
LLAMA_QUANTIZED = {"Q4_0": 2, "Q5_0": 8, "IQ4_NL": 25}
# "Q8_0+AMX": what the server runs on a CPU with AMX (amx_decode): prompts read from the Q8_0
# copy, tokens generated from the shipped Q4_1 file in llama.cpp's AMX layout.
AMX = "Q8_0+AMX"
FORMATS = ["Q4_1", "Q8_0", AMX, "F16", "F32", *LLAMA_QUANTIZED]


async def ask(engine, prompt: str, new_tokens: int) -> dict:
    result = await engine.complete(prompt, GenerationParams(max_tokens=new_tokens), None)
    assert result.completion_tokens == new_tokens, f"{result.completion_tokens} tokens: the prompt must not end early"
    return {"prefill_s": result.first_token_ms / 1000,
            "decode_tok_s": (result.completion_tokens - 1) / ((result.engine_ms - result.first_token_ms) / 1000),
            "cached": result.cached_prompt_tokens, "text": result.text}


def clear(engine) -> None:
    cache = getattr(engine, "_kv", None) or engine._prefix_cache
    cache.clear()


def measure_in_this_process(args) -> dict:
    """One engine, one round (the child process's work): cold prompt and typed prompt."""
    from transformers import AutoTokenizer

    from server.engines.llama_cpp_engine import LlamaCppEngine
    from server.engines.transformers_engine import TransformersEngine

    model_dir = Path(args.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prefix = make_prefix(tokenizer, args.prefix_tokens)
    n_prompt = len(tokenizer(prefix, add_special_tokens=False).input_ids)
    if args.child == "transformers":
        engine = TransformersEngine(model_dir, torch_threads=args.threads)
    else:
        engine = LlamaCppEngine(model_dir, Path(args.gguf), tokenizer, threads=args.threads,
                                n_ctx=n_prompt + args.new_tokens + 64,
                                step_gguf=Path(args.step_gguf) if args.step_gguf else None)

    async def go() -> dict:
        await engine.start()
        try:
            prompt = f"# round {args.round}\n{prefix}"
            clear(engine)
            cold = await ask(engine, prompt, args.new_tokens)
            typed = await ask(engine, prompt + TYPED, args.new_tokens)
            return {"prefill_s": cold["prefill_s"], "decode_tok_s": cold["decode_tok_s"],
                    "typed_first_token_s": typed["prefill_s"], "n_prompt": n_prompt, "text": cold["text"]}
        finally:
            await engine.close()

    return asyncio.run(go())


def write_format(fmt: str, into: Path) -> Path:
    """The default model's GGUF in `fmt`: as shipped (Q4_1), rewritten by codeloop/gguf_requant.py,
    or quantized by llama.cpp from an F32 copy (llama.cpp prints a line per tensor on stderr)."""
    import ctypes

    from codeloop.models import gguf_path

    if fmt == "Q4_1":
        return gguf_path()
    if fmt == AMX:
        return write_format("Q8_0", into)
    if fmt not in LLAMA_QUANTIZED:
        target = into / f"model-{fmt}.gguf"  # Q8_0+AMX reads prompts from the Q8_0 copy: written once
        return target if target.exists() else write_gguf_as(gguf_path(), target, fmt)
    import llama_cpp

    f32 = into / "model-F32.gguf"
    if not f32.exists():
        write_gguf_as(gguf_path(), f32, "F32")
    target = into / f"model-{fmt}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_QUANTIZED[fmt]
    if llama_cpp.llama_model_quantize(str(f32).encode(), str(target).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"llama.cpp could not write {fmt}")
    return target


def run(args) -> None:
    from codeloop.models import gguf_path, prepare_default_model

    model_dir = prepare_default_model(Path(os.environ.get("CODELOOP_TEST_MODELS_DIR", REPO / ".codeloop-test" / "models")))
    print(f"model {model_dir.name}; prompt ~{args.prefix_tokens} tokens; {args.new_tokens} greedy tokens; {args.rounds} rounds; "
          f"{args.threads} thread(s) per engine; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        ggufs = {}
        for fmt in args.formats:
            started = time.monotonic()
            ggufs[fmt] = write_format(fmt, Path(tmp))
            print(f"  {fmt}: {ggufs[fmt].stat().st_size / 2**20:.0f} MiB" + ("" if fmt == "Q4_1" else f", written in {time.monotonic() - started:.1f} s"))
        # Each engine measured in a process of its own: after PyTorch has run in a process,
        # llama.cpp's threads decode 2.4x slower there (both use libgomp; measured), which is
        # not what a server running one engine sees.
        engines = {"transformers": None, **{f"llama-cpp {fmt}": path for fmt, path in ggufs.items()}}
        steps = {f"llama-cpp {AMX}": gguf_path()}
        figures: dict[str, dict[str, list[float]]] = {name: {} for name in engines}
        texts: dict[str, list[str]] = {name: [] for name in engines}
        for round_ in range(args.rounds):
            for name, gguf in engines.items():
                command = [sys.executable, __file__, "--child", "transformers" if gguf is None else "llama-cpp",
                           "--model-dir", str(model_dir), "--round", str(round_), "--threads", str(args.threads),
                           "--prefix-tokens", str(args.prefix_tokens), "--new-tokens", str(args.new_tokens)]
                if gguf is not None:
                    command += ["--gguf", str(gguf)]
                if name in steps:
                    command += ["--step-gguf", str(steps[name])]
                out = subprocess.run(command, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                for key in ("prefill_s", "decode_tok_s", "typed_first_token_s"):
                    figures[name].setdefault(key, []).append(result[key])
                texts[name].append(result["text"])
            print(f"  round {round_ + 1} done", flush=True)

    rows = [("read 1st (s)", "prefill_s"), ("decode tok/s", "decode_tok_s"), ("typed 1st (s)", "typed_first_token_s")]
    base = {key: statistics.median(figures["transformers"][key]) for _, key in rows}
    print("\nmedians; x = times faster than transformers. read 1st: time to the first token, prompt read"
          " in full; typed 1st: the same after typing a line (the rest reused)")
    print(f"{'engine':18}" + "".join(f"{label:>15}{'x':>7}" for label, _ in rows) + "  same answer as transformers")
    for name in engines:
        line = f"{name:18}"
        for _, key in rows:
            value = statistics.median(figures[name][key])
            speedup = value / base[key] if key == "decode_tok_s" else base[key] / value
            line += f"{value:15.3f}{speedup:7.2f}"
        same = sum(a == b for a, b in zip(texts[name], texts["transformers"]))
        print(line + f"  {same} of {len(texts[name])} rounds")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefix-tokens", type=int, default=500)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="per engine (2 cores shared with other work: 1 is steadier)")
    parser.add_argument("--formats", nargs="*", default=["Q4_1", "Q8_0", AMX], choices=FORMATS)
    # The child process's arguments (one engine, one round; prints its figures as JSON).
    parser.add_argument("--child", choices=["transformers", "llama-cpp"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--gguf", help=argparse.SUPPRESS)
    parser.add_argument("--step-gguf", help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_in_this_process(args)))
    else:
        run(args)


if __name__ == "__main__":
    main()
