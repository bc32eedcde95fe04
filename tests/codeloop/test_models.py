"""The default model's one-time conversion from GGUF, and its check against the original."""
from __future__ import annotations

import json
import os

import pytest
import torch

from codeloop import models


def test_default_model_was_converted_and_checked_against_llama_cpp(model_dir):
    marker = json.loads((model_dir / models.MARKER).read_text())
    check = models.ConversionCheck(**marker["check"])
    assert check.ok, check.describe()
    # llama.cpp is installed by `make test`, so the strong reference must have been used.
    assert check.llama_cpp_mean_kl is not None, "llama-cpp-python missing: the GGUF reference was not checked"
    assert check.llama_cpp_mean_kl <= models.MAX_MEAN_KL_VS_LLAMA_CPP
    assert check.llama_cpp_top1_agreement >= models.MIN_TOP1_AGREEMENT_VS_LLAMA_CPP
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (model_dir / "model.safetensors").stat().st_size > 400e6


def test_prepare_reuses_the_converted_folder(model_dir):
    before = (model_dir / "model.safetensors").stat().st_mtime_ns
    again = models.prepare_default_model(model_dir.parent)
    assert again == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == before


def test_check_catches_a_wrong_conversion(model_dir, tmp_path):
    """A converted folder whose weights differ from the GGUF fails the check."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in model_dir.iterdir():
        if f.name != "model.safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    tensors = load_file(model_dir / "model.safetensors")
    name = "model.layers.3.self_attn.q_proj.weight"
    tensors[name] = tensors[name].flip(0).contiguous()  # rows permuted: a classic conversion bug
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})

    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    result = models.check_conversion(broken, reference, tokenizer)
    assert not result.ok
    assert result.max_abs_diff_vs_dequantized > models.MAX_ABS_DIFF_VS_DEQUANTIZED
    good = models.check_conversion(model_dir, reference, tokenizer)
    assert good.max_abs_diff_vs_dequantized == pytest.approx(0, abs=1e-5)


def test_configured_folder_must_be_a_model(tmp_path):
    with pytest.raises(models.ModelError, match="config.json"):
        models.resolve_model(str(tmp_path), tmp_path / "models")


def test_model_prepare_checks_a_configured_folder(model_dir, tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "CODELOOP_CONFIG": os.devnull, "CODELOOP_DATA_DIR": str(tmp_path)}
    ok = subprocess.run([sys.executable, "-m", "codeloop.cli", "model", "prepare", "--model", str(model_dir)],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "llama, vocabulary 49152, FIM template 'prefix-only'" in ok.stdout
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "config.json").write_text("{}")
    bad = subprocess.run([sys.executable, "-m", "codeloop.cli", "model", "prepare", "--model", str(tmp_path / "fake")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "not a loadable Hugging Face model folder" in bad.stderr
