"""LoRA training: one loop for CPU (LoRA on a bf16 or fp32 base) and CUDA (4-bit NF4 QLoRA),
readable in one screen.

The adapter is LoRA-only (no new tokens, no modules_to_save), so both the embedded engine
and vLLM load it. Loss is on the completion only (trainer/batches.py). A checkpoint every
`checkpoint_every` steps makes a run resumable; a step and a time budget bound it.
"""
from __future__ import annotations

import importlib
import json
import math
import random
import resource
import sys
import time
import warnings
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from trainer.batches import Encoded, collate, completion_losses, encode, length_grouped_batches, pad_id
from trainer.config import DataConfig, TrainConfig
from trainer.examples import Example
from trainer.prompts import heal_aligned, render


@dataclass
class TrainResult:
    adapter_dir: str
    steps: int
    tokens: int
    seconds: float
    tokens_per_s: float
    final_loss: float
    stopped_by: str  # "steps", "time_budget"
    quantization: str  # "nf4" or "none"
    precision: str  # the base model's compute dtype: "bf16" or "fp32"
    device: str
    peak_rss_mb: float
    resumed_from: int


# peft still asks the deprecated name on every forward; the message says nothing to users.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def use_nf4(config: TrainConfig) -> bool:
    """auto: NF4 only where CUDA is present (on CPU it is no faster and hurts a small model)."""
    if config.quantize == "auto":
        return torch.cuda.is_available() and _has_bitsandbytes()
    if config.quantize == "nf4" and not _has_bitsandbytes():
        raise RuntimeError("trainer.train.quantize = 'nf4' needs bitsandbytes: pip install 'codeloop[gpu]'")
    return config.quantize == "nf4"


def compute_dtype(config: TrainConfig) -> torch.dtype:
    """The base model's dtype: precision "auto" is bf16 where the hardware multiplies it natively."""
    if config.precision != "auto":
        return torch.bfloat16 if config.precision == "bf16" else torch.float32
    if torch.cuda.is_available():
        return torch.bfloat16
    # NF4 on a CPU is the GPU path's smoke test, kept in the fp32 compute it was measured with.
    return torch.bfloat16 if cpu_has_bf16_matrix_units() and not use_nf4(config) else torch.float32


def cpu_has_bf16_matrix_units() -> bool:
    """Intel AMX. Measured here: a bf16 matrix product 7.8x fp32's, a training step 2.6x faster;
    on CPUs without it bf16 ran 18-27x slower than fp32."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch >= 2.3; private, so guarded
    try:
        return bool(check and check())
    except Exception:  # an unknown CPU: fp32 is the safe choice
        return False


def load_model(model_dir: Path, config: TrainConfig) -> Any:
    """The base model (4-bit NF4, bf16 or fp32) with fresh fp32 LoRA weights on it."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    compute = compute_dtype(config)
    kwargs: dict[str, Any] = {"dtype": compute}
    if use_nf4(config):
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), device_map="cuda" if cuda else None, **kwargs)
    model.config.use_cache = False
    if "quantization_config" in kwargs:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    if config.gradient_checkpointing:
        # Non-reentrant: no need to make the frozen inputs require grad for LoRA to learn.
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM",
                      layers_to_transform=_top_layers(model.config, config.top_layers))
    # autocast_adapter_dtype: the LoRA weights (what the optimizer updates) stay fp32 on a bf16 base.
    return get_peft_model(model, lora, autocast_adapter_dtype=True)


def mixed_precision(model: Any, device: torch.device) -> tuple[ExitStack, ExitStack]:
    """(around forward and backward, around forward only). On a CPU with a bf16 base: matrix
    products in bf16 (autocast, forward only), and LoRA layers fed bf16 activations as they are
    (peft would copy each to fp32 first: a tenth of a step), also in backward, where gradient
    checkpointing runs the forward again and must see the same dtypes."""
    step, forward = ExitStack(), ExitStack()
    if device.type == "cpu" and model.get_base_model().dtype == torch.bfloat16:
        from peft.helpers import disable_input_dtype_casting

        step.enter_context(disable_input_dtype_casting(model))
        forward.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
    return step, forward


def _top_layers(model_config: Any, top: int) -> list[int] | None:
    """The indices of the last ``top`` layers, or None (every layer) for 0 or more than exist."""
    count = int(getattr(model_config, "num_hidden_layers", 0) or 0)
    if top <= 0 or count == 0 or top >= count:
        return None
    return list(range(count - top, count))


def encode_examples(examples: Sequence[Example], tokenizer: Any, template: Any, data: DataConfig) -> list[Encoded]:
    """Each example as template(prefix, suffix) -> middle, trimmed to max_seq_tokens, cut where
    the server's token healing cuts its prompts (trainer/prompts.heal_aligned)."""
    encoded = []
    for e in examples:
        prefix, middle = heal_aligned(e.prefix, e.middle)
        middle_tokens = len(tokenizer(middle, add_special_tokens=False)["input_ids"])
        budget = data.max_seq_tokens - min(middle_tokens, data.max_seq_tokens // 2) - 1
        prompt = render(template, tokenizer, prefix, e.suffix, budget, data.suffix_share, snippets=e.snippets(),
                        filepath=e.path, context_share=data.context_share) if prefix or e.suffix else ""
        encoded.append(encode(tokenizer, prompt, middle, data.max_seq_tokens, e.weight, eos=template.supports_suffix))
    return encoded


def train_adapter(model_dir: Path, tokenizer: Any, template: Any, examples: Sequence[Example], config: TrainConfig,
                  data: DataConfig, out_dir: Path, *, progress: bool = True) -> TrainResult:
    """Train, checkpointing into out_dir/checkpoint (resumed if present); adapter in out_dir/adapter."""
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    _seed(config.seed)
    items = encode_examples(examples, tokenizer, template, data)
    model = load_model(model_dir, config)
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(params, config, device)
    per_epoch = math.ceil(len(items) / config.batch_size)
    total = max(1, min(config.max_steps, math.ceil(config.epochs * per_epoch / config.grad_accum)))
    warmup = min(config.warmup_steps, total // 2)
    clock = _TrainingClock(config.max_minutes * 60)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, clock.budget_used()))
    checkpoint = out_dir / "checkpoint"
    step, clock.earlier_s = _resume(checkpoint, model, optimizer, schedule, config)
    resumed_from = step
    for group, base_lr in zip(optimizer.param_groups, schedule.base_lrs):  # as of now, not as saved
        group["lr"] = base_lr * lr_factor(step, total, warmup, clock.budget_used())
    stream = _micro_batches(items, config, skip=step * config.grad_accum)
    pad = pad_id(tokenizer)
    log = open(out_dir / "train_log.jsonl", "a")
    started, tokens, loss_value, stopped_by = time.monotonic(), 0, float("nan"), "steps"
    bar = tqdm(total=total, initial=step, desc="training", unit="step", file=sys.stderr, disable=not progress)
    model.train()
    while step < total:
        loss_sum = 0.0
        for _ in range(config.grad_accum):
            batch = collate(next(stream), pad).to(device)
            around_step, around_forward = mixed_precision(model, device)
            with around_step:
                with around_forward:
                    losses = completion_losses(model, batch)
                loss = (losses * batch.weights).sum() / batch.weights.sum().clamp(min=1e-6)
                (loss / config.grad_accum).backward()
            loss_sum, tokens = loss_sum + loss.item() / config.grad_accum, tokens + batch.tokens
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step, loss_value = step + 1, loss_sum
        rate = tokens / max(time.monotonic() - started, 1e-9)
        bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{rate:.0f}")
        bar.update(1)
        log.write(json.dumps({"step": step, "loss": round(loss_value, 5), "lr": schedule.get_last_lr()[0],
                              "tokens_per_s": round(rate, 1), "elapsed_s": round(time.monotonic() - started, 2)}) + "\n")
        log.flush()
        if step % config.checkpoint_every == 0 and step < total:
            _save_checkpoint(checkpoint, model, optimizer, schedule, step, config, clock.seconds())
        if clock.budget_used() >= 1.0 and step < total:
            stopped_by = "time_budget"
            break
    bar.close()
    log.close()
    _save_checkpoint(checkpoint, model, optimizer, schedule, step, config, clock.seconds())
    adapter_dir = out_dir / "adapter"
    model.save_pretrained(str(adapter_dir))
    seconds = time.monotonic() - started
    return TrainResult(str(adapter_dir), step, tokens, round(seconds, 2), round(tokens / max(seconds, 1e-9), 1),
                       round(loss_value, 5), stopped_by, "nf4" if use_nf4(config) else "none",
                       "bf16" if compute_dtype(config) == torch.bfloat16 else "fp32", str(device),
                       round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), resumed_from)


def lr_factor(step: int, total: int, warmup: int, budget_used: float = 0.0) -> float:
    """The learning rate's multiplier at `step`: linear warm-up, then a linear decay that
    reaches 0 at `total` steps or when the time budget is spent (`budget_used`: the fraction
    gone; 0 without a budget), whichever comes first. A run stopped by its budget has then
    annealed, instead of stopping at a high rate with steps it never took still planned."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, min((total - step) / max(1, total - warmup), 1.0 - budget_used))


class _TrainingClock:
    """Training time across tries (a resumed run carries on from the checkpoint's)."""

    def __init__(self, budget_s: float):
        self.budget_s, self.earlier_s, self.started = budget_s, 0.0, time.monotonic()

    def seconds(self) -> float:
        return self.earlier_s + time.monotonic() - self.started

    def budget_used(self) -> float:
        return self.seconds() / self.budget_s if self.budget_s else 0.0


def _micro_batches(items: list[Encoded], config: TrainConfig, skip: int) -> Iterator[list[Encoded]]:
    """Batches over epochs forever (each epoch its own seeded order); the first `skip` dropped
    so that a resumed run sees exactly the batches an uninterrupted one would have."""
    epoch, seen = 0, 0
    while True:
        for batch in length_grouped_batches(items, config.batch_size, config.seed + epoch):
            seen += 1
            if seen > skip:
                yield batch
        epoch += 1


def _optimizer(params: list, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    if device.type == "cuda" and use_nf4(config):
        import bitsandbytes as bnb  # paged 8-bit AdamW: what makes 7B+ models fit

        return bnb.optim.PagedAdamW8bit(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _save_checkpoint(folder: Path, model: Any, optimizer: Any, schedule: Any, step: int, config: TrainConfig,
                     seconds: float) -> None:
    """Written beside, then renamed: a crash mid-save leaves the previous checkpoint whole."""
    from peft import get_peft_model_state_dict

    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save({"step": step, "seconds": seconds, "config": _resumable(config), "lora": get_peft_model_state_dict(model),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}}, tmp / "state.pt")
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        for f in old.iterdir():
            f.unlink()
        old.rmdir()


def _resume(folder: Path, model: Any, optimizer: Any, schedule: Any, config: TrainConfig) -> tuple[int, float]:
    """The step to continue from and the training seconds spent before it: (0, 0) without a
    checkpoint made with the same configuration."""
    state_file = folder / "state.pt"
    if not state_file.is_file():
        return 0, 0.0
    from peft import set_peft_model_state_dict

    # weights_only: tensors and plain data, never code, even from a run folder someone else wrote.
    state = torch.load(state_file, weights_only=True)
    if state["config"] != _resumable(config):
        print("trainer: checkpoint was made with other settings; starting over", file=sys.stderr)
        return 0, 0.0
    set_peft_model_state_dict(model, state["lora"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    print(f"trainer: resuming from step {state['step']}", file=sys.stderr)
    return int(state["step"]), float(state.get("seconds", 0.0))


def _resumable(config: TrainConfig) -> dict:
    """The settings a checkpoint must share to be resumed (budgets may change between tries)."""
    return config.model_dump(exclude={"max_minutes", "checkpoint_every"})


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _has_bitsandbytes() -> bool:
    try:
        importlib.import_module("bitsandbytes")  # importing it is the check
    except Exception:  # not installed, or no usable backend
        return False
    return True


def result_dict(result: TrainResult) -> dict:
    return asdict(result)
