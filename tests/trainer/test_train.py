"""Training mechanics on a tiny random Llama: the loss falls, the adapter is LoRA-only and
loads, a run interrupted by its time budget resumes to exactly the uninterrupted result,
and the 4-bit NF4 path (the GPU's) runs on CPU through the same code."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.config import DataConfig, TrainConfig
from trainer.examples import Example
from trainer.prompts import training_template
from trainer.train import lr_factor, train_adapter


def _examples(n: int = 16) -> list[Example]:
    return [Example(prefix=f"def f{i}(x):\n    ", suffix="\n", middle=f"return x * {i}\n", kind="fim",
                    source="t", path="a.py", commit=f"c{i}", time=float(i)) for i in range(n)]


def _setup(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    return tok, training_template("auto", "llama", tok.get_vocab())


def _lora(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def test_loss_falls_and_adapter_is_lora_only(tiny_model, tmp_path):
    tok, template = _setup(tiny_model)
    config = TrainConfig(max_steps=12, lr=5e-3, batch_size=4, warmup_steps=1, rank=4, alpha=8)
    result = train_adapter(tiny_model, tok, template, _examples(), config, DataConfig(max_seq_tokens=64), tmp_path, progress=False)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 13))
    # A random 2-layer model starts at ln(vocab) = 10.8; LoRA moves it slowly.
    assert log[-1]["loss"] < log[0]["loss"] - 0.2, f"loss did not fall: {log[0]['loss']} -> {log[-1]['loss']}"
    assert result.steps == 12 and result.tokens > 0 and result.quantization == "none"
    adapter = Path(result.adapter_dir)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and not cfg.get("modules_to_save") and cfg["r"] == 4
    assert sorted(cfg["target_modules"]) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    weights = _lora(adapter)
    assert weights and all("lora_A" in k or "lora_B" in k for k in weights), "only LoRA tensors are saved"
    assert template.name == "prefix-only"  # no FIM tokens: the format the model was pretrained on


def test_top_layers_puts_lora_on_the_last_layers_only(tiny_model, tmp_path):
    """trainer.train.top_layers: backward stops below them, so a CPU step is cheaper."""
    tok, template = _setup(tiny_model)
    config = TrainConfig(max_steps=2, lr=5e-3, batch_size=2, warmup_steps=1, rank=4, alpha=8, top_layers=1)
    result = train_adapter(tiny_model, tok, template, _examples(), config, DataConfig(max_seq_tokens=64), tmp_path, progress=False)
    layers = {int(k.split(".layers.")[1].split(".")[0]) for k in _lora(Path(result.adapter_dir))}
    assert layers == {1}  # the tiny model has layers 0 and 1
    assert json.loads((Path(result.adapter_dir) / "adapter_config.json").read_text())["layers_to_transform"] == [1]


def test_time_budget_stops_and_resume_matches_uninterrupted(tiny_model, tmp_path):
    tok, template = _setup(tiny_model)
    data = DataConfig(max_seq_tokens=64)
    config = TrainConfig(max_steps=6, lr=5e-3, batch_size=4, warmup_steps=1, rank=4, alpha=8, dropout=0.1)
    whole = train_adapter(tiny_model, tok, template, _examples(), config, data, tmp_path / "whole", progress=False)

    budget = config.model_copy(update={"max_minutes": 1e-6})  # stops after its first step
    first = train_adapter(tiny_model, tok, template, _examples(), budget, data, tmp_path / "split", progress=False)
    assert first.stopped_by == "time_budget" and 0 < first.steps < 6
    second = train_adapter(tiny_model, tok, template, _examples(), config, data, tmp_path / "split", progress=False)
    assert second.resumed_from == first.steps and second.steps == 6
    a, b = _lora(Path(whole.adapter_dir)), _lora(Path(second.adapter_dir))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), f"{key} differs after resuming"


def test_changed_settings_do_not_resume(tiny_model, tmp_path):
    tok, template = _setup(tiny_model)
    data = DataConfig(max_seq_tokens=64)
    config = TrainConfig(max_steps=2, batch_size=4, rank=4, alpha=8)
    train_adapter(tiny_model, tok, template, _examples(), config, data, tmp_path, progress=False)
    again = train_adapter(tiny_model, tok, template, _examples(), config.model_copy(update={"lr": 1e-3}), data, tmp_path, progress=False)
    assert again.resumed_from == 0


def test_nf4_qlora_path_runs_on_cpu_and_loads_on_full_precision_base(tiny_model, tmp_path):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is in the test extra; without it the NF4 path is untested")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tok, template = _setup(tiny_model)
    config = TrainConfig(max_steps=2, batch_size=4, rank=4, alpha=8, quantize="nf4")
    result = train_adapter(tiny_model, tok, template, _examples(8), config, DataConfig(max_seq_tokens=64), tmp_path, progress=False)
    assert result.quantization == "nf4" and result.steps == 2
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, result.adapter_dir)
    out = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(out).all()


def test_training_examples_are_cut_where_the_server_heals_its_prompts():
    from codeloop.token_healing import heal
    from trainer.prompts import heal_aligned

    for prefix, middle in [("def f(x):\n", "    return x\n"), ("class A:\n    x = 1\n\n", "    def g(self):\n"),
                           ("x = 1\n", "y = 2\n"), ("def f(x):\n", "\n    return x\n")]:
        cut, taught = heal_aligned(prefix, middle)
        assert cut + taught == prefix + middle
        if middle[:1] == " ":  # a cursor after that indentation: the server's prompt ends where the example's does
            indent = middle[: len(middle) - len(middle.lstrip())]
            assert cut == heal(prefix + indent).prompt_prefix
        else:
            assert (cut, taught) == (prefix, middle)


class _RunsCode:
    """A pickled object whose loading would run code (here: write a file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_would_run_code_is_refused_not_loaded(tmp_path):
    import pickle

    import torch

    from trainer.config import TrainConfig
    from trainer.train import _resume

    marker = tmp_path / "code-ran"
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save({"config": {}, "step": 3, "payload": _RunsCode(str(marker))}, folder / "state.pt")
    with pytest.raises(pickle.UnpicklingError):
        _resume(folder, None, None, None, TrainConfig())
    assert not marker.exists()


def test_the_learning_rate_anneals_within_the_time_budget():
    """Decay reaches 0 at the planned steps or when the time budget is spent, whichever first:
    a run stopped by its budget ends at a rate of 0, not halfway down its planned decay."""
    assert [lr_factor(s, 100, 10) for s in (0, 9)] == [1 / 11, 10 / 11]  # warm-up
    assert lr_factor(10, 100, 10) == 1.0 and lr_factor(55, 100, 10) == 0.5 and lr_factor(100, 100, 10) == 0.0
    assert lr_factor(20, 1000, 10, budget_used=0.75) == 0.25  # the clock is further along than the steps
    assert lr_factor(900, 1000, 10, budget_used=0.5) == pytest.approx(0.1010, abs=1e-4)  # the steps are
    assert lr_factor(20, 1000, 10, budget_used=1.3) == 0.0


def test_a_run_stopped_by_its_time_budget_ends_at_a_learning_rate_of_zero(tiny_model, tmp_path):
    tok, template = _setup(tiny_model)
    config = TrainConfig(max_steps=10_000, epochs=10_000, lr=5e-3, batch_size=2, warmup_steps=1, rank=4, alpha=8, max_minutes=0.05)
    result = train_adapter(tiny_model, tok, template, _examples(), config, DataConfig(max_seq_tokens=64), tmp_path, progress=False)
    rates = [json.loads(line)["lr"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert result.stopped_by == "time_budget" and 3 <= result.steps < 10_000
    assert rates[-1] == 0.0 and max(rates) > 1e-3
    assert all(later <= earlier + 1e-12 for earlier, later in zip(rates[1:], rates[2:]))  # down after warm-up
