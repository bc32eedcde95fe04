"""Training steps per CPU minute: the trainer's recipes side by side on a real repository.

    python bench/train_speed.py                      # windows of this repository's files
    python bench/train_speed.py --repo PATH --steps 12 --threads 2

Each recipe trains the same windows (the repository at HEAD, as the trainer's snapshot cuts
them; 4 x 512 tokens a step) for the same steps, in its own process (so each peak RSS is its
own, and one recipe's thread pools do not slow the next). Prints seconds per step, tokens/s,
peak RSS, the loss over the last steps, and each recipe's speed as a ratio to the first
(the trainer's recipe before bf16: fp32 base, LoRA dropout 0.05, gradient checkpointing).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> TrainConfig fields that differ from the defaults
RECIPES: dict[str, dict] = {
    "fp32, dropout 0.05, checkpointing (before)": {"precision": "fp32", "dropout": 0.05, "gradient_checkpointing": True},
    "fp32, dropout 0, checkpointing": {"precision": "fp32", "dropout": 0.0, "gradient_checkpointing": True},
    "bf16, dropout 0, checkpointing (default)": {"precision": "bf16", "dropout": 0.0, "gradient_checkpointing": True},
    "bf16, dropout 0, no checkpointing": {"precision": "bf16", "dropout": 0.0, "gradient_checkpointing": False},
}


def child(recipe: str, model_dir: Path, data_file: Path, out: Path, steps: int, threads: int) -> None:
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from trainer.config import DataConfig, TrainConfig
    from trainer.examples import Example
    from trainer.prompts import training_template
    from trainer.train import train_adapter

    torch.set_num_threads(threads)
    examples = [Example(**row) for row in json.loads(data_file.read_text())]
    tok = AutoTokenizer.from_pretrained(model_dir)
    template = training_template("auto", AutoConfig.from_pretrained(model_dir).model_type, tok.get_vocab())
    config = TrainConfig(max_steps=steps, epochs=1000, warmup_steps=2, **RECIPES[recipe])
    result = train_adapter(model_dir, tok, template, examples, config, DataConfig(), out, progress=False)
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    tail = losses[-max(1, steps // 3):]
    print(json.dumps({"seconds": result.seconds, "tokens": result.tokens, "tokens_per_s": result.tokens_per_s,
                      "precision": result.precision, "loss_tail": sum(tail) / len(tail),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=ROOT)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=list(RECIPES), help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.model_dir, args.data, args.out, args.steps, args.threads)
        return

    from codeloop.models import prepare_default_model
    from codeloop.settings import load_settings
    from trainer.config import DataConfig, MiningConfig
    from trainer.snapshot import snapshot_examples
    from trainer.train import cpu_has_bf16_matrix_units

    model_dir = prepare_default_model(load_settings().models_dir)
    examples, counts = snapshot_examples(args.repo, time.time() + 1, MiningConfig(), name=args.repo.name,
                                         window_chars=DataConfig().window_chars, recent_commits=0)
    print(f"{len(examples)} windows of {counts['files']} files of {args.repo}; {args.steps} steps each, "
          f"{args.threads} threads; CPU bf16 matrix units (AMX): {cpu_has_bf16_matrix_units()}")
    work = Path(tempfile.mkdtemp(prefix="codeloop-train-speed-"))
    data_file = work / "train.json"
    data_file.write_text(json.dumps([e.to_row() for e in examples]))
    first = None
    for i, recipe in enumerate(RECIPES):
        cmd = [sys.executable, __file__, "--child", recipe, "--model-dir", str(model_dir), "--data", str(data_file),
               "--out", str(work / f"r{i}"), "--steps", str(args.steps), "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{recipe} failed:\n{done.stderr[-3000:]}")
        f = json.loads(done.stdout.strip().splitlines()[-1])
        first = first or f
        print(f"{recipe:>44}: {f['seconds'] / args.steps:5.2f} s/step, {f['tokens_per_s']:6.0f} tokens/s "
              f"({f['tokens_per_s'] / first['tokens_per_s']:.2f}x), peak RSS {f['peak_rss_mb']:5.0f} MB, "
              f"loss over the last steps {f['loss_tail']:.3f}")


if __name__ == "__main__":
    main()
