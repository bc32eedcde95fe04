"""PEFT LoRA folder -> GGUF LoRA file, the form llama.cpp loads adapters in.

Follows llama.cpp's own convert_lora_to_gguf.py, without needing the base model's Hugging
Face folder (what it needs is read from the base GGUF file):

- metadata: general.architecture (must equal the base model's), general.type = "adapter",
  adapter.type = "lora", adapter.lora.alpha;
- tensors `<base tensor>.lora_a` / `.lora_b` holding PEFT's lora_A (rank x in) and lora_B
  (out x rank) as they are: numpy's row-major (r, in) is ggml's ne = [in, r], the shape
  llama.cpp checks against the base weight's ne = [in, out];
- for the llama architecture, convert_hf_to_gguf reorders the rows of q_proj and k_proj
  (interleaved RoPE halves, per head), so the same row permutation is applied to lora_B of
  q and k: the adapter's delta B @ A must land on the same rows as the weight it adapts.

PEFT's scaling (lora_alpha / r, or / sqrt(r) with rsLoRA; alpha_pattern per module) is
multiplied into lora_B here and adapter.lora.alpha is written as 0, which llama.cpp reads as
"scale 1": one exact rule for every PEFT variant, instead of llama.cpp's alpha / rank.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WEIGHTS_FILE = "adapter_model.safetensors"
# Architectures whose q/k rows convert_hf_to_gguf permutes (LlamaModel.permute).
PERMUTED_QK_ARCHS = frozenset({"llama"})
_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


class LoraConversionError(Exception):
    """The adapter cannot be converted; the message says why."""


@dataclass(frozen=True)
class BaseModelInfo:
    """What the conversion needs to know about the base model, from its GGUF metadata."""

    arch: str
    block_count: int
    head_count: int
    head_count_kv: int

    @classmethod
    def from_gguf(cls, path: Path) -> "BaseModelInfo":
        import gguf

        reader = gguf.GGUFReader(str(path))

        def field(key: str):
            found = reader.get_field(key)
            if found is None:
                raise LoraConversionError(f"{path} has no {key} in its metadata")
            return found.contents()

        arch = str(field("general.architecture"))
        heads = int(field(f"{arch}.attention.head_count"))
        kv = reader.get_field(f"{arch}.attention.head_count_kv")
        return cls(arch=arch, block_count=int(field(f"{arch}.block_count")), head_count=heads,
                   head_count_kv=int(kv.contents()) if kv is not None else heads)


def convert_peft_lora(adapter_dir: Path, base: BaseModelInfo, out: Path) -> Path:
    """Write the PEFT LoRA in `adapter_dir` as a GGUF LoRA file `out` (atomically) for a base
    model described by `base`; returns `out`."""
    import gguf

    config = _read_config(Path(adapter_dir))
    pairs = _read_pairs(Path(adapter_dir) / WEIGHTS_FILE)
    names = gguf.get_tensor_name_map(_arch_enum(base.arch), base.block_count)
    out = Path(out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".partial")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, base.arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)  # scaling is in lora_b (see above)
        for module, (a, b) in sorted(pairs.items()):
            target = names.get_name(module + ".weight", try_suffixes=(".weight",))
            if target is None:
                raise LoraConversionError(f"llama.cpp has no {base.arch} tensor for the adapted layer {module!r}")
            b = b * _scaling(config, module, rank=a.shape[0])
            if base.arch in PERMUTED_QK_ARCHS and module.endswith(("q_proj", "k_proj")):
                b = _permute_rows(b, base.head_count if module.endswith("q_proj") else base.head_count_kv)
            writer.add_tensor(target + ".lora_a", np.ascontiguousarray(a, dtype=np.float32))
            writer.add_tensor(target + ".lora_b", np.ascontiguousarray(b, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _read_config(adapter_dir: Path) -> dict:
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise LoraConversionError(f"cannot read {adapter_dir / 'adapter_config.json'}: {exc}") from None
    if config.get("peft_type") != "LORA":
        raise LoraConversionError(f"only LoRA adapters convert; this one has peft_type={config.get('peft_type')!r}")
    # Variants whose forward pass is not plain W + s * B @ A: llama.cpp would silently differ.
    if config.get("use_dora"):
        raise LoraConversionError("DoRA adapters (use_dora) cannot be served by llama.cpp; train a plain LoRA")
    if config.get("bias", "none") != "none":
        raise LoraConversionError(f"adapters that train biases (bias={config['bias']!r}) cannot be served by llama.cpp")
    if config.get("modules_to_save"):
        raise LoraConversionError("adapters with modules_to_save cannot be served by llama.cpp")
    return config


def _read_pairs(weights: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{module name as in the base model ("model.layers.0.self_attn.q_proj"): (A, B)} in float32."""
    from safetensors import safe_open

    halves: dict[str, dict[str, np.ndarray]] = {}
    # The torch framework reads bf16 too, which numpy cannot hold.
    with safe_open(str(weights), framework="pt") as fh:
        for key in fh.keys():
            match = _PEFT_KEY.match(key)
            if match is None:
                raise LoraConversionError(f"unexpected tensor {key!r} in {weights.name}: only lora_A/lora_B weights convert")
            halves.setdefault(match["module"], {})[match["part"]] = fh.get_tensor(key).float().numpy()
    if not halves:
        raise LoraConversionError(f"{weights} holds no LoRA weights")
    pairs = {}
    for module, parts in halves.items():
        if set(parts) != {"A", "B"}:
            raise LoraConversionError(f"{module} has lora_{''.join(parts)} but not both lora_A and lora_B")
        a, b = parts["A"], parts["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise LoraConversionError(f"{module}: lora_A {a.shape} and lora_B {b.shape} do not make a LoRA pair")
        pairs[module] = (a, b)
    return pairs


def _scaling(config: dict, module: str, *, rank: int) -> float:
    """PEFT's multiplier of B @ A for this module (LoraLayer.update_layer)."""
    alpha = float(config.get("lora_alpha") or rank)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        # As PEFT's get_pattern_key: a pattern matches the end of the module's full name.
        if re.match(rf"(.*\.)?({pattern})$", module):
            alpha = float(value)
            break
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _permute_rows(b: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute on the output rows: per head, the rows of the
    two RoPE halves are interleaved."""
    rows = b.shape[0]
    return b.reshape(n_head, 2, rows // n_head // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def _arch_enum(arch: str):
    import gguf

    for enum, name in gguf.MODEL_ARCH_NAMES.items():
        if name == arch:
            return enum
    raise LoraConversionError(f"the gguf package does not know the architecture {arch!r}")
