"""Held-out evaluation: base model, live adapter and candidate, each prompted the way the
server would prompt it.

Metrics per model: exact match and edit similarity of the next line (the first line of the
middle) and of the whole middle span, and the completion-only loss. Generation is greedy.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import StoppingCriteria

# edit_similarity is re-exported: one definition (codeloop/similarity.py) for eval and the review report.
from codeloop.similarity import edit_similarity, trimmed_lines as _lines
from trainer.batches import collate, completion_losses, pad_id
from trainer.config import DataConfig, EvalConfig
from trainer.examples import Example
from trainer.train import encode_examples
from trainer.prompts import render

METRICS = ("exact_match_line", "edit_sim_line", "exact_match_middle", "edit_sim_middle", "loss")


@dataclass(frozen=True)
class Candidate:
    """A model to evaluate: `adapter` None is the base model; `template` its FIM format."""

    label: str
    adapter: Path | None
    template: Any


def evaluate(model_dir: Path, tokenizer: Any, candidates: Sequence[Candidate], examples: Sequence[Example],
             config: EvalConfig, data: DataConfig, *, progress: bool = True) -> dict[str, dict[str, float]]:
    """{label: {metric: value, "n": count}} over the first `max_examples` held-out examples."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from tqdm import tqdm

    examples = list(examples)[: config.max_examples]
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    base.eval()
    results = {}
    for cand in candidates:
        model = PeftModel.from_pretrained(base, str(cand.adapter), adapter_name="candidate") if cand.adapter else base
        model.eval()
        texts = []
        bar = tqdm(total=len(examples), desc=f"evaluating {cand.label}", unit="ex", file=sys.stderr, disable=not progress)
        for start in range(0, len(examples), config.batch_size):
            chunk = examples[start:start + config.batch_size]
            texts += _generate(model, tokenizer, cand.template, chunk, config, data)
            bar.update(len(chunk))
        bar.close()
        results[cand.label] = {**score(texts, [e.middle for e in examples]),
                               "loss": _loss(model, tokenizer, cand.template, examples, config, data)}
        if cand.adapter:
            base = model.unload()  # the bare base model back, without the adapter's layers
    return results


def score(generated: Sequence[str], expected: Sequence[str]) -> dict[str, float]:
    """Exact match and edit similarity of the next line and of the middle span, averaged."""
    n = max(1, len(expected))
    totals = dict.fromkeys(("exact_match_line", "edit_sim_line", "exact_match_middle", "edit_sim_middle"), 0.0)
    for got, want in zip(generated, expected):
        want_lines = _lines(want)
        got_lines = _lines(got)[: max(1, len(want_lines))]
        got_line, want_line = (got_lines or [""])[0].strip(), (want_lines or [""])[0].strip()
        totals["exact_match_line"] += got_line == want_line
        totals["edit_sim_line"] += edit_similarity(got_line, want_line)
        got_span, want_span = "\n".join(got_lines), "\n".join(want_lines)
        totals["exact_match_middle"] += got_span == want_span
        totals["edit_sim_middle"] += edit_similarity(got_span, want_span)
    return {k: round(v / n, 4) for k, v in totals.items()} | {"n": len(expected)}


@torch.no_grad()
def _generate(model: Any, tokenizer: Any, template: Any, examples: Sequence[Example], config: EvalConfig, data: DataConfig) -> list[str]:
    budget = data.max_seq_tokens - config.max_new_tokens
    prompts = [render(template, tokenizer, e.prefix, e.suffix, budget, data.suffix_share, snippets=e.snippets(),
                      filepath=e.path, context_share=data.context_share) for e in examples]
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True)
    pad = pad_id(tokenizer)
    width = enc["input_ids"].shape[1]
    lines_needed = [max(1, len(_lines(e.middle))) for e in examples]
    done = _EnoughLines(tokenizer, width, lines_needed, template.stop)
    # An example at the top of a file has an empty prefix: for a prefix-only prompt the row is
    # all padding, which transformers mistakes for right padding and warns about every batch.
    quiet = logging.getLogger("transformers.generation.utils")
    level, _ = quiet.level, quiet.setLevel(logging.ERROR)
    try:
        out = model.generate(**enc, max_new_tokens=config.max_new_tokens, do_sample=False, pad_token_id=pad,
                             eos_token_id=tokenizer.eos_token_id, stopping_criteria=[done])
    finally:
        quiet.setLevel(level)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=False)
    return [_cut_at_stops(t, template.stop, tokenizer) for t in texts]


class _EnoughLines(StoppingCriteria):
    """Stops a row once it has as many complete lines as its expected middle (or a stop
    string): nothing after that is scored, and CPU generation is slow."""

    def __init__(self, tokenizer: Any, prompt_width: int, lines_needed: list[int], stops: Sequence[str]):
        self.tokenizer, self.width, self.needed, self.stops = tokenizer, prompt_width, lines_needed, stops

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.width:], skip_special_tokens=False)
        return torch.tensor([len(_lines(t + "x")) > n or any(s in t for s in self.stops) for t, n in zip(texts, self.needed)],
                            dtype=torch.bool, device=input_ids.device)


def _cut_at_stops(text: str, stops: Sequence[str], tokenizer: Any) -> str:
    for stop in (*stops, tokenizer.eos_token or "", tokenizer.pad_token or ""):
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text


@torch.no_grad()
def example_losses(model: Any, tokenizer: Any, template: Any, examples: Sequence[Example], data: DataConfig,
                   batch_size: int = 8) -> list[float]:
    """Each example's completion-only loss (mean over its tokens), the same computation as training."""
    items = encode_examples(examples, tokenizer, template, data)
    pad = pad_id(tokenizer)
    losses: list[float] = []
    for start in range(0, len(items), batch_size):
        losses += completion_losses(model, collate(items[start:start + batch_size], pad)).tolist()
    return losses


def _loss(model: Any, tokenizer: Any, template: Any, examples: Sequence[Example], config: EvalConfig, data: DataConfig) -> float:
    """Mean completion-only loss per example."""
    losses = example_losses(model, tokenizer, template, examples, data, config.batch_size)
    return round(sum(losses) / len(losses), 4) if losses else math.nan


def table(results: dict[str, dict[str, float]]) -> str:
    """The results as a short fixed-width table, one row per model."""
    head = f"{'model':<28}" + "".join(f"{m:>20}" for m in METRICS)
    rows = [head] + [f"{label:<28}" + "".join(f"{r[m]:>20.4f}" for m in METRICS) for label, r in results.items()]
    return "\n".join(rows)
