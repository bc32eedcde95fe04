"""PEFT LoRA -> GGUF LoRA (server/engines/gguf_lora.py), checked against transformers + peft."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from server.engines.gguf_lora import BaseModelInfo, LoraConversionError, convert_peft_lora

pytest.importorskip("llama_cpp")

PROMPT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n        return n\n'
# SmolLM2's spare specials (ids 11-13) as a FIM-trained adapter sees them (template smollm-fim).
FIM_PROMPT = "<jupyter_start>def add(a, b):\n    <jupyter_text>\n\nprint(add(1, 2))\n<jupyter_code>"
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def base_info():
    from codeloop.models import gguf_path

    return BaseModelInfo.from_gguf(gguf_path())


@pytest.fixture(scope="module")
def llama(base_info):
    from codeloop.models import gguf_path
    from server.engines.llama_cpp_model import LlamaCppModel

    model = LlamaCppModel(gguf_path(), n_ctx=512, n_threads=1)
    yield model
    model.close()


def llama_logits(model, ids, handle) -> torch.Tensor:
    model.use_adapter(handle)
    model.truncate(0)
    return torch.tensor(np.array([model.decode([t], i, logits=True) for i, t in enumerate(ids)]), dtype=torch.float64)


def peft_logits(model_dir, adapter_dir, ids) -> tuple[torch.Tensor, torch.Tensor]:
    """(with the adapter, without it) from transformers + peft on the converted model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), str(adapter_dir))
    with torch.no_grad():
        on = model(torch.tensor([ids])).logits[0].double()
        with model.disable_adapter():
            off = model(torch.tensor([ids])).logits[0].double()
    return on, off


def mean_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    p, q = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


@pytest.mark.parametrize("targets, scale, prompt", [(ALL_LINEAR, 1.0, PROMPT), (("q_proj", "k_proj"), 3.0, PROMPT), (ALL_LINEAR, 1.0, FIM_PROMPT)],
                         ids=["all-linear", "q-k-only", "fim-specials"])
def test_llama_cpp_with_the_converted_adapter_matches_peft(targets, scale, prompt, model_dir, smol_tokenizer, make_adapter, base_info, llama, tmp_path):
    """An adapter that changes the model a lot: llama.cpp with the GGUF LoRA is as close to
    transformers + peft as the quantized base model is to the dequantized one, and far from
    the base. Measured: KL 0.003 (adapters' own effect 0.18 and 0.13; the quantized base
    model's own 0.002); without the q/k row
    permutation 0.026 and 0.20, so both cases catch a missing or wrong one. The FIM case feeds
    SmolLM2's spare specials 11-13 (a FIM-trained adapter's sentinels) as token ids."""
    adapter = make_adapter(21, scale=scale, rank=8, targets=targets)
    ids = smol_tokenizer(prompt, add_special_tokens=False).input_ids
    handle = llama.load_adapter(convert_peft_lora(adapter, base_info, tmp_path / "lora.gguf"))
    try:
        ours = llama_logits(llama, ids, handle)
        base = llama_logits(llama, ids, None)
    finally:
        llama.free_adapter(handle)
    reference, reference_base = peft_logits(model_dir, adapter, ids)
    effect = mean_kl(reference, reference_base)
    assert effect > 0.04, f"the adapter hardly changes the model (KL {effect:.4f}): the test would prove nothing"
    # Quantization alone: within the default model's conversion check (models.py: 0.02).
    quantization = mean_kl(base, reference_base)
    assert quantization < 0.02
    assert mean_kl(ours, reference) < 2 * quantization + 0.005 and mean_kl(ours, reference) < effect / 5
    assert float((ours.argmax(-1) == reference.argmax(-1)).double().mean()) >= 0.9


def test_peft_scaling_is_folded_into_lora_b(make_adapter, base_info, tmp_path):
    """rsLoRA and a per-module alpha: B @ A in the file is PEFT's delta weight exactly
    (after the q/k row permutation), with adapter.lora.alpha = 0 (llama.cpp: scale 1)."""
    import gguf
    from safetensors.torch import load_file

    from server.engines.gguf_lora import _permute_rows

    source = make_adapter(22, scale=1.0, rank=4, targets=("q_proj", "v_proj"))
    folder = tmp_path / "adapter"
    folder.mkdir()
    config = json.loads((source / "adapter_config.json").read_text())
    config.update(lora_alpha=16, use_rslora=True, alpha_pattern={"v_proj": 4})
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes((source / "adapter_model.safetensors").read_bytes())
    reader = gguf.GGUFReader(str(convert_peft_lora(folder, base_info, tmp_path / "lora.gguf")))
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("adapter.type").contents() == "lora"
    assert reader.get_field("adapter.lora.alpha").contents() == 0.0
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    weights = load_file(folder / "adapter_model.safetensors")
    for layer, module, gguf_name, scale in [(0, "self_attn.q_proj", "attn_q", 16 / 2), (29, "self_attn.v_proj", "attn_v", 4 / 2)]:
        prefix = f"base_model.model.model.layers.{layer}.{module}"
        a, b = weights[prefix + ".lora_A.weight"].numpy(), weights[prefix + ".lora_B.weight"].numpy()
        expected = scale * b @ a  # rsLoRA: alpha / sqrt(r), r = 4
        if gguf_name == "attn_q":
            expected = _permute_rows(expected, base_info.head_count)
        got = tensors[f"blk.{layer}.{gguf_name}.weight.lora_b"] @ tensors[f"blk.{layer}.{gguf_name}.weight.lora_a"]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change, needle", [
    ({"use_dora": True}, "DoRA"),
    ({"bias": "all"}, "biases"),
    ({"peft_type": "IA3"}, "only LoRA"),
])
def test_adapters_llama_cpp_cannot_run_are_refused(change, needle, make_adapter, base_info, tmp_path):
    source = make_adapter(23, targets=("q_proj",))
    folder = tmp_path / "adapter"
    folder.mkdir()
    config = json.loads((source / "adapter_config.json").read_text()) | change
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes((source / "adapter_model.safetensors").read_bytes())
    with pytest.raises(LoraConversionError, match=needle):
        convert_peft_lora(folder, base_info, tmp_path / "out.gguf")
    assert list(tmp_path.glob("out.gguf*")) == []  # nothing half-written left behind


def test_an_adapter_for_another_shape_is_refused_by_llama_cpp(base_info, llama, tmp_path):
    """Weights of the wrong size convert, but llama.cpp refuses to load them (no crash)."""
    from safetensors.torch import save_file

    from server.engines.llama_cpp_model import LlamaCppError

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({prefix + ".lora_A.weight": torch.zeros(2, 100), prefix + ".lora_B.weight": torch.zeros(576, 2)},
              folder / "adapter_model.safetensors")
    with pytest.raises(LlamaCppError, match="could not load"):
        llama.load_adapter(convert_peft_lora(folder, base_info, tmp_path / "wrong.gguf"))
