"""Training speed and memory: `codeloop train`'s loop against a plain transformers Trainer +
peft script, on the same data, model, LoRA settings and step count, in one run; then the
held-out exact match of the base model and of codeloop's adapter on a real repository.

    python bench/train_compare.py                   # mines this repository's own history
    python bench/train_compare.py --repo PATH --steps 20 --batch 4

Each trainer runs in its own process, so each peak RSS is its own. Prints figures and the
codeloop/Trainer ratios (target: tokens/s ratio >= 1.0), and the same loop on a 4-bit NF4
base (bitsandbytes) against fp32, which decides whether CPU training uses NF4.
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


def child(which: str, model_dir: Path, data_file: Path, out: Path, steps: int, batch: int, seq: int) -> None:
    """Train in this process and print one JSON line of figures."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from trainer.config import DataConfig, TrainConfig
    from trainer.examples import Example
    from trainer.prompts import training_template
    from trainer.train import encode_examples, train_adapter

    examples = [Example(**row) for row in json.loads(data_file.read_text())]
    tok = AutoTokenizer.from_pretrained(model_dir)
    template = training_template("auto", AutoConfig.from_pretrained(model_dir).model_type, tok.get_vocab())
    config = TrainConfig(max_steps=steps, batch_size=batch, warmup_steps=2, epochs=1000,
                         quantize="nf4" if which == "codeloop-nf4" else "none")
    data = DataConfig(max_seq_tokens=seq)
    if which.startswith("codeloop"):
        result = train_adapter(model_dir, tok, template, examples, config, data, out, progress=False)
        figures = {"tokens": result.tokens, "seconds": result.seconds}
    else:
        figures = _plain_trainer(model_dir, tok, encode_examples(examples, tok, template, data), config, out)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["tokens_per_s"] = figures["tokens"] / figures["seconds"]
    print(json.dumps(figures))
    del torch


def _plain_trainer(model_dir: Path, tok, items, config, out: Path) -> dict:
    """What one would write with the stock tools: Trainer, DataCollatorForSeq2Seq, peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                             target_modules=list(config.target_modules), task_type="CAUSAL_LM"))
    rows = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids),
             "labels": [-100] * e.prompt_len + e.input_ids[e.prompt_len:]} for e in items]
    seen = {"tokens": 0}

    class CountTokens(TrainerCallback):
        pass

    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)

    def counting_collator(features):
        batch = collator(features)
        seen["tokens"] += int(batch["attention_mask"].sum())
        return batch

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=config.batch_size, max_steps=config.max_steps,
                             learning_rate=config.lr, warmup_steps=2, gradient_checkpointing=True,
                             gradient_checkpointing_kwargs={"use_reentrant": False}, bf16=False, use_cpu=True,
                             report_to=[], save_strategy="no", logging_steps=1000, seed=config.seed,
                             dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=counting_collator, callbacks=[CountTokens()])
    started = time.monotonic()
    trainer.train()
    return {"tokens": seen["tokens"], "seconds": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=ROOT, help="git repository to mine (default: this one)")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--eval-examples", type=int, default=48)
    parser.add_argument("--no-nf4", action="store_true", help="skip measuring 4-bit NF4 (bitsandbytes) on this machine")
    parser.add_argument("--child", choices=["codeloop", "trainer", "codeloop-nf4"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model_dir, args.data, args.out, args.steps, args.batch, args.seq)
        return

    from codeloop.models import prepare_default_model
    from codeloop.settings import load_settings
    from trainer.config import DataConfig, MiningConfig
    from trainer.dataset import split_by_time
    from trainer.mining import mine_repositories

    model_dir = prepare_default_model(load_settings().models_dir)
    started = time.monotonic()
    examples, report = mine_repositories([args.repo], MiningConfig(), progress=True)
    print(f"mined {report.examples} examples from {report.commits} commits of {args.repo} in {time.monotonic() - started:.1f} s")
    split = split_by_time(examples, DataConfig(min_train_examples=8, min_eval_examples=4))
    work = Path(tempfile.mkdtemp(prefix="codeloop-bench-"))
    data_file = work / "train.json"
    data_file.write_text(json.dumps([e.to_row() for e in split.train]))
    figures = {}
    for which in ("trainer", "codeloop") + (() if args.no_nf4 else ("codeloop-nf4",)):
        cmd = [sys.executable, __file__, "--child", which, "--model-dir", str(model_dir), "--data", str(data_file),
               "--out", str(work / which), "--steps", str(args.steps), "--batch", str(args.batch), "--seq", str(args.seq)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{which} failed:\n{done.stderr[-3000:]}")
        figures[which] = json.loads(done.stdout.strip().splitlines()[-1])
        f = figures[which]
        print(f"{which:>12}: {f['tokens']} tokens in {f['seconds']:.1f} s = {f['tokens_per_s']:.0f} tokens/s, peak RSS {f['peak_rss_mb']:.0f} MB")
    c, t = figures["codeloop"], figures["trainer"]
    print(f"ratio codeloop/Trainer: tokens/s {c['tokens_per_s'] / t['tokens_per_s']:.2f} (target >= 1.0), "
          f"peak RSS {c['peak_rss_mb'] / t['peak_rss_mb']:.2f}")
    if "codeloop-nf4" in figures:
        q = figures["codeloop-nf4"]
        print(f"NF4 base / fp32 base (codeloop): tokens/s {q['tokens_per_s'] / c['tokens_per_s']:.2f}, "
              f"peak RSS {q['peak_rss_mb'] / c['peak_rss_mb']:.2f}")

    from transformers import AutoConfig, AutoTokenizer

    from trainer.config import EvalConfig
    from trainer.evaluate import Candidate, evaluate, table
    from trainer.prompts import serving_template, training_template

    tok = AutoTokenizer.from_pretrained(model_dir)
    model_type, vocab = AutoConfig.from_pretrained(model_dir).model_type, tok.get_vocab()
    cands = [Candidate("base", None, serving_template(None, model_type, vocab)),
             Candidate(f"after {args.steps} steps", work / "codeloop" / "adapter", training_template("auto", model_type, vocab))]
    results = evaluate(model_dir, tok, cands, split.eval, EvalConfig(max_examples=args.eval_examples), DataConfig(), progress=True)
    print(f"held-out ({len(split.eval)} examples from the newest commits, first {args.eval_examples} scored):")
    print(table(results))


if __name__ == "__main__":
    main()
