"""QLoRA on an NVIDIA GPU: codeloop's training loop (trainer/train.py) on a 4-bit NF4 base
(bitsandbytes, double quantization, bf16 compute, paged AdamW8bit: what `quantize = "auto"`
picks where CUDA is present) against LoRA on the plain bf16 base, same examples and steps,
in one run. bench/gpu_check.sh runs it and then serves the NF4 adapter with vLLM.

    python bench/gpu_qlora.py --model DIR --out DIR [--steps 30 --batch 8 --seq 512]

Examples are fill-in-the-middle pieces cut from this repository's own Python files (no git
history needed on the GPU machine). Prints s/step, training tokens/s, peak GPU memory and the
last loss of each, the NF4/bf16 ratios, and where the NF4 adapter was saved.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FOLDERS = ("server", "lsp", "trainer", "feedback", "codeloop")


def repository_examples(limit: int) -> list:
    """A middle of 1-4 lines every 25 lines of each Python file, with the text around it."""
    from trainer.examples import Example

    examples = []
    for path in sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")):
        lines = path.read_text().splitlines(keepends=True)
        for start in range(10, len(lines) - 5, 25):
            size = 1 + start % 4
            middle = "".join(lines[start:start + size])
            if len(middle.strip()) < 4:
                continue
            prefix, suffix = "".join(lines[:start])[-3000:], "".join(lines[start + size:])[:1000]
            examples.append(Example(prefix, suffix, middle, "fim", "codeloop", str(path.relative_to(ROOT)), "", 0.0, "python"))
    return examples[:limit]


def train(kind: str, model_dir: Path, examples: list, args: argparse.Namespace, out: Path) -> dict:
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from trainer.config import DataConfig, TrainConfig
    from trainer.prompts import training_template
    from trainer.train import train_adapter

    tok = AutoTokenizer.from_pretrained(model_dir)
    template = training_template("auto", AutoConfig.from_pretrained(model_dir).model_type, tok.get_vocab())
    config = TrainConfig(max_steps=args.steps, batch_size=args.batch, warmup_steps=2, epochs=1000,
                         quantize="nf4" if kind == "nf4" else "none")
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    result = train_adapter(model_dir, tok, template, examples, config, DataConfig(max_seq_tokens=args.seq), out, progress=False)
    size = sum(f.stat().st_size for f in Path(result.adapter_dir).iterdir())
    return {"kind": kind, "steps": result.steps, "seconds": result.seconds, "s_per_step": result.seconds / result.steps,
            "tokens_per_s": result.tokens_per_s, "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
            "last_loss": result.final_loss, "quantization": result.quantization, "device": result.device,
            "adapter_dir": result.adapter_dir, "adapter_mb": size / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="Hugging Face model folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the two runs (nf4/, bf16/)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--examples", type=int, default=400)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_qlora: no CUDA device (this bench is for a GPU machine; CPU training is bench/train_compare.py)")
    examples = repository_examples(args.examples)
    print(f"{len(examples)} examples from this repository; {args.steps} steps of {args.batch} x <= {args.seq} tokens; "
          f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    rows = []
    for kind in ("nf4", "bf16"):
        started = time.monotonic()
        row = train(kind, args.model, examples, args, args.out / kind)
        row["wall_s"] = time.monotonic() - started  # model load included
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"\n{'base':6} {'s/step':>8} {'tokens/s':>9} {'peak GPU MiB':>13} {'last loss':>10} {'adapter MB':>11}")
    for r in rows:
        print(f"{r['kind']:6} {r['s_per_step']:8.3f} {r['tokens_per_s']:9.0f} {r['peak_gpu_mib']:13.0f} "
              f"{r['last_loss']:10.3f} {r['adapter_mb']:11.2f}")
    nf4, bf16 = rows
    print(f"nf4/bf16: time per step {nf4['s_per_step'] / bf16['s_per_step']:.2f}x, "
          f"peak GPU memory {nf4['peak_gpu_mib'] / bf16['peak_gpu_mib']:.2f}x")
    print(f"NF4 adapter: {nf4['adapter_dir']}")


if __name__ == "__main__":
    main()
