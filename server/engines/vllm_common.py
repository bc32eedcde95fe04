"""What both vLLM engines share: adapter use counting (safe unload) and the all-zero adapter.

Why the zero adapter: on CPU, vLLM's LoRA ops gather `weights[indices]` per token and the
index -1 ("no adapter") picks the *last* adapter slot, so a base-model request batched with
adapter requests silently gets an adapter's delta (VLLM-CPU.md; vLLM PRs #48421, #49656).
With `zero_base_adapter` on, no request is ever sent without an adapter: "the base model" is
served as a LoRA whose weights are all zero, which changes nothing and is never index -1.
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path

ZERO_ADAPTER = "codeloop-base-zero"


class AdapterUsage:
    """Requests in flight per adapter, so an unload waits until the last one has finished
    (the registry has already stopped routing new requests to it)."""

    def __init__(self) -> None:
        self._count: Counter[str] = Counter()
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def using(self, name: str | None):
        if name is None:
            yield
            return
        self._count[name] += 1
        try:
            yield
        finally:
            async with self._changed:
                self._count[name] -= 1
                self._changed.notify_all()

    async def wait_idle(self, name: str, timeout: float) -> bool:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._count[name] <= 0), timeout)
                return True
            except asyncio.TimeoutError:
                return False


def write_zero_adapter(model_dir: Path, folder: Path, rank: int = 8) -> Path:
    """A LoRA on every layer's q_proj whose weights are all zero (shapes from config.json)."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((Path(model_dir) / "config.json").read_text())
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    layers = config["num_hidden_layers"]
    tensors = {}
    for i in range(layers):
        key = f"base_model.model.model.layers.{i}.self_attn.q_proj"
        tensors[f"{key}.lora_A.weight"] = torch.zeros(rank, hidden)
        tensors[f"{key}.lora_B.weight"] = torch.zeros(heads * head_dim, rank)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank,
        "target_modules": ["q_proj"], "lora_dropout": 0.0, "bias": "none",
        "base_model_name_or_path": str(model_dir),
    }, indent=2))
    return folder
