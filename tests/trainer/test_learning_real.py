"""The trainer learns a real codebase: a small budget on attrs' history before a date makes the
lines added after it more likely, on most of them, significantly.

The real repository is the attrs bundle beside the project (../shared/repos/attrs.bundle, a real
history of 1,837 commits; never copied into the project). The full figure, exact match and edit
similarity asked through a running server, is bench/learning.py's; a CI budget does not make an
exact-match gain significant, but it does make the real later lines more probable, line by
line: that is the learning the bench's figures grow from.

The measure: each held-out line (as `codeloop eval` cuts them) scored by the default model with
and without the adapter, as the mean loss of the line's tokens after the prompt the server would
build (prefix-only, token-healed); paired per line, McNemar's exact (sign) test on which model
gives the line the lower loss.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from trainer.config import DataConfig, MiningConfig, TrainConfig
from trainer.dataset import parse_date
from trainer.examples import Example
from trainer.heldout import held_out_lines
from trainer.significance import mcnemar_exact
from trainer.snapshot import snapshot_examples

# Beside the project (../shared/repos), or where CODELOOP_TEST_REPOS says for a clone elsewhere.
BUNDLE = Path(os.environ.get("CODELOOP_TEST_REPOS") or Path(__file__).resolve().parents[3] / "shared" / "repos") / "attrs.bundle"
SINCE = "2025-06-01"
STEPS = 40  # 160 windows of ~512 tokens: a few minutes on two cores
LINES = 100


@pytest.fixture(scope="module")
def attrs_repo(tmp_path_factory) -> Path:
    if not BUNDLE.is_file():
        pytest.skip(f"{BUNDLE} is not on this machine (the real repositories live beside the project)")
    repo = tmp_path_factory.mktemp("real") / "attrs"
    subprocess.run(["git", "clone", "-q", str(BUNDLE), str(repo)], check=True, capture_output=True)
    # The bundle has no HEAD: check out its only branch.
    branch = subprocess.run(["git", "-C", str(repo), "branch", "-r", "--format=%(refname:short)"],
                            capture_output=True, text=True, check=True).stdout.split()[0]
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "-B", "main", branch], check=True)
    return repo


def line_losses(model, tokenizer, template, lines, data: DataConfig) -> list[float]:
    """Each line's mean token loss after the server's prompt (the training loss's computation)."""
    from trainer.evaluate import example_losses

    # The cursor is after the indentation: the prompt ends at the line start and the line's
    # indentation belongs to the answer, as token healing asks for it (trainer/prompts.heal_aligned).
    examples = []
    for line in lines:
        indent = line.prefix[len(line.prefix.rstrip(" \t")):]
        examples.append(Example(prefix=line.prefix[: len(line.prefix) - len(indent)], suffix=line.suffix,
                                middle=indent + line.expected, kind="fim", source=line.repo, path=line.path,
                                commit=line.commit, time=line.time))
    return example_losses(model, tokenizer, template, examples, data)


def test_a_small_budget_on_real_history_makes_later_lines_more_likely(attrs_repo, model_dir, smol_tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainer.prompts import training_template
    from trainer.train import train_adapter

    data = DataConfig(holdout_since=SINCE)
    windows, counts = snapshot_examples(attrs_repo, parse_date(SINCE), MiningConfig(), name="attrs",
                                        window_chars=data.window_chars, recent_commits=data.recent_commits)
    assert counts["files"] > 20 and all(e.time < parse_date(SINCE) for e in windows)
    template = training_template("auto", AutoConfig.from_pretrained(model_dir).model_type, smol_tokenizer.get_vocab())
    result = train_adapter(model_dir, smol_tokenizer, template, windows, TrainConfig(max_steps=STEPS), data,
                           tmp_path, progress=False)
    assert result.steps == STEPS

    lines = held_out_lines(attrs_repo, SINCE, n=LINES)
    assert len(lines) == LINES and all(h.time >= parse_date(SINCE) for h in lines)
    base_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    base = line_losses(base_model, smol_tokenizer, template, lines, data)
    adapted = PeftModel.from_pretrained(base_model, result.adapter_dir).eval()
    after = line_losses(adapted, smol_tokenizer, template, lines, data)

    test = mcnemar_exact([b < a for b, a in zip(base, after)], [a < b for b, a in zip(base, after)])
    mean_base, mean_after = sum(base) / LINES, sum(after) / LINES
    print(f"attrs after {SINCE}, {LINES} lines: mean line loss {mean_base:.3f} -> {mean_after:.3f}; "
          f"lower with the adapter on {test.b_only}, with the base on {test.a_only}; p = {test.p_value:.2g}")
    assert test.b_only > test.a_only and test.p_value < 0.01
    assert mean_after < mean_base
