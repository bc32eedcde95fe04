"""Tokenized prompt/completion pairs, left-padded batches and the completion-only loss.

Training and evaluation share these, so a loss means the same thing in both. Batches are
padded on the LEFT: every completion then ends at the last position, and the model's head
(a 49k-word vocabulary for the default model) only runs over the last `K` positions, where
K is the longest completion in the batch, instead of over the whole prompt.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    prompt_len: int  # tokens before the completion; only the completion is learned
    weight: float = 1.0

    @property
    def completion_len(self) -> int:
        return len(self.input_ids) - self.prompt_len


def encode(tokenizer: Any, prompt: str, completion: str, max_tokens: int, weight: float = 1.0, *, eos: bool = True) -> Encoded:
    """prompt + completion + EOS, the completion cut so the whole fits in `max_tokens`.

    `eos` False for prefix-only training: there the code goes on after the completion, and
    a model taught to end there would end suggestions early.

    The prompt is never empty: the first completion token needs a position before it to be
    predicted from (and collate's logits window is one longer than the completion). An empty
    prompt (prefix-only, a line at the top of a file, with a tokenizer that adds no BOS, as
    SmolLM2's) becomes the start-of-text token alone.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"][: max_tokens - 2] or [start_id(tokenizer)]
    room = max_tokens - len(prompt_ids) - 1
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"][:room]
    end = [tokenizer.eos_token_id] if eos and tokenizer.eos_token_id is not None else []
    return Encoded(prompt_ids + completion_ids + end, len(prompt_ids), weight)


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T], left-padded
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor  # [B, K]: the last K tokens' targets, -100 where nothing is learned
    weights: torch.Tensor  # [B]
    tokens: int  # real (unpadded) tokens in the batch, for tokens/s

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device),
                     self.labels.to(device), self.weights.to(device), self.tokens)


def start_id(tokenizer: Any) -> int:
    """The token an empty prompt stands on: BOS, or EOS (the document separator) without one."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to start an empty prompt with")
    return token


def pad_id(tokenizer: Any) -> int:
    """The padding token; EOS for tokenizers without one (padding is masked either way)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def collate(items: Sequence[Encoded], pad_id: int) -> Batch:
    if any(e.prompt_len < 1 for e in items):
        # Its first completion token would have no position to be predicted from, and the
        # logits window (completion + 1) would be longer than the sequence.
        raise ValueError("an encoded item has no prompt token; build items with encode()")
    width = max(len(e.input_ids) for e in items)
    keep = max(e.completion_len for e in items)  # positions whose logits are needed
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), keep), -100, dtype=torch.long)
    for row, e in enumerate(items):
        n = len(e.input_ids)
        ids[row, width - n:] = torch.tensor(e.input_ids)
        mask[row, width - n:] = 1
        completion = torch.tensor(e.input_ids[e.prompt_len:])
        labels[row, keep - len(completion):] = completion
    # Positions count real tokens only, so left padding does not shift them.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    weights = torch.tensor([e.weight for e in items], dtype=torch.float32)
    return Batch(ids, mask, positions, labels, weights, int(mask.sum()))


def completion_losses(model: Any, batch: Batch) -> torch.Tensor:
    """Per-example mean cross-entropy over the completion tokens (shape [B])."""
    keep = batch.labels.shape[1]
    # Logits at position t predict token t+1: the last keep+1 positions predict the last keep
    # tokens (the final position, after EOS, is dropped).
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids, logits_to_keep=keep + 1, use_cache=False)
    logits = out.logits[:, :-1, :].float()
    token_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.labels.reshape(-1),
                                 ignore_index=-100, reduction="none").view(batch.labels.shape)
    counts = (batch.labels != -100).sum(-1).clamp(min=1)
    return token_loss.sum(-1) / counts


def length_grouped_batches(items: Sequence[Encoded], batch_size: int, seed: int) -> Iterator[list[Encoded]]:
    """One epoch of batches of similar length (less padding), in a seeded random order."""
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    window = batch_size * 32  # sort within windows, so the epoch stays shuffled overall
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: len(items[i].input_ids))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    for b in batches:
        yield [items[i] for i in b]
