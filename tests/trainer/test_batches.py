"""Encoding and batching edge cases: an example with an empty prompt (prefix-only template,
a line at the top of a file; SmolLM2's tokenizer adds no BOS) still trains."""
from __future__ import annotations

import json
import math

import pytest
import torch

from trainer.batches import Encoded, collate, completion_losses, encode, pad_id, start_id
from trainer.config import DataConfig, TrainConfig
from trainer.examples import Example
from trainer.prompts import training_template
from trainer.train import train_adapter


def test_empty_prompt_gets_one_start_token(smol_tokenizer):
    assert smol_tokenizer("", add_special_tokens=True)["input_ids"] == []  # the case being fixed
    item = encode(smol_tokenizer, "", "import os\nimport sys\n", max_tokens=64)
    assert item.prompt_len == 1 and item.input_ids[0] == start_id(smol_tokenizer)
    completion = smol_tokenizer("import os\nimport sys\n", add_special_tokens=False)["input_ids"]
    assert item.input_ids[1:] == completion + [smol_tokenizer.eos_token_id]


def test_collate_with_an_empty_prompt_keeps_logits_inside_the_sequence(smol_tokenizer):
    items = [encode(smol_tokenizer, "", "import os\nimport sys\nimport json\n", 64),  # the longest completion
             encode(smol_tokenizer, "def f(x):\n    ", "return x\n", 64)]
    batch = collate(items, pad_id(smol_tokenizer))
    width, keep = batch.input_ids.shape[1], batch.labels.shape[1]
    assert keep == items[0].completion_len and keep + 1 <= width
    assert batch.labels[0].tolist() == items[0].input_ids[1:]  # every completion token is learned
    learned = batch.labels[1][batch.labels[1] != -100].tolist()
    assert learned == items[1].input_ids[items[1].prompt_len:]


def test_collate_refuses_an_item_without_a_prompt_token():
    with pytest.raises(ValueError, match="no prompt token"):
        collate([Encoded([5, 6, 2], 0)], pad_id=2)


def test_losses_for_a_batch_with_an_empty_prompt(tiny_model, smol_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    items = [encode(smol_tokenizer, "", "import os\nimport sys\n", 64), encode(smol_tokenizer, "x = ", "1\n", 64)]
    losses = completion_losses(model, collate(items, pad_id(smol_tokenizer)))
    assert losses.shape == (2,) and torch.isfinite(losses).all()


def test_prefix_only_training_with_top_of_file_examples(tiny_model, smol_tokenizer, tmp_path):
    """Was: "Expected input batch_size (212) to match target batch_size (216)" at the first
    batch holding a top-of-file example whose completion is the batch's longest."""
    top = [Example(prefix="", suffix=f"\ndef f{i}(): ...\n", middle=f"import os\nimport sys{i}\nimport json\n",
                   kind="fim", source="t", path="a.py", commit=f"t{i}", time=float(i)) for i in range(4)]
    rest = [Example(prefix=f"def g{i}(x):\n    ", suffix="", middle=f"return x + {i}\n", kind="fim", source="t",
                    path="b.py", commit=f"c{i}", time=float(i)) for i in range(4)]
    template = training_template("prefix-only", "llama", smol_tokenizer.get_vocab())
    config = TrainConfig(max_steps=3, batch_size=8, warmup_steps=0, rank=4, alpha=8, lr=1e-3, fim_template="prefix-only")
    result = train_adapter(tiny_model, smol_tokenizer, template, [*top, *rest], config, DataConfig(max_seq_tokens=64),
                           tmp_path, progress=False)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert result.steps == 3 and len(log) == 3
    assert all(math.isfinite(row["loss"]) and row["loss"] > 0 for row in log)
