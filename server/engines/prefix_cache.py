"""Reuse of recent prompts' KV caches by the embedded engine.

An editor sends nearly the same prompt keystroke after keystroke: the file above the cursor,
plus what was typed since. Reading a 500-token prompt takes about a second on two CPU cores,
longer than the pause in which a suggestion has to arrive, so the engine keeps the KV caches
of the last few prompts it read (per adapter: LoRA changes the keys and values) and a new
prompt only reads the tokens after the longest start it shares with one of them. Tokens
the model generated count too: when the user types what was suggested, the new prompt
starts with them. Several entries, so that a few editors typing at once do not evict each
other's.

This only pays when prompts start the same way; the language server and the prompt trimming
keep the start of the window fixed while the user types for that reason.

Used from the engine's single worker thread only, so it needs no lock.
"""
from __future__ import annotations

import copy

import torch
from transformers import DynamicCache

MAX_ENTRIES = 8
MAX_BYTES = 768 * 2**20  # the default model: ~46 kB a token, so 8 prompts of 2,000 tokens
# An entry that shares its start with the new prompt but would lose more than this many
# tokens is copied rather than cut, so the editor it came from can still reuse it whole.
# Fewer are lost in the common case (the same editor: its last answer, the suffix).
KEEP_IF_LOSING = 64


class PrefixCache:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        # Least recently used first: (adapter (None = the base), the tokens whose keys and
        # values the cache holds, cache, its size in bytes)
        self._entries: list[tuple[str | None, torch.Tensor, DynamicCache, int]] = []

    def take(self, adapter: str | None, ids: torch.Tensor) -> tuple[DynamicCache, int]:
        """A cache holding the longest start of `ids` (shape 1 x n) already read with this
        adapter, and its length. At most n - 1 tokens: the model has to read the last prompt
        token itself to produce the first new one. The caller extends the cache in place and
        hands it back with `put`."""
        limit = ids.shape[1] - 1
        best, same = None, 0
        for i, (name, cached_ids, _, _) in enumerate(self._entries):
            n = min(len(cached_ids), limit)
            if name != adapter or n <= same:
                continue
            shared = int((cached_ids[:n] == ids[0, :n]).long().cumprod(0).sum())
            if shared > same:
                best, same = i, shared
        if best is None:
            return DynamicCache(), 0
        _, cached_ids, cache, _ = self._entries[best]
        if len(cached_ids) - same > KEEP_IF_LOSING:
            cache = copy.deepcopy(cache)
        else:
            del self._entries[best]
        extra = cache.get_seq_length() - same
        if extra:
            try:
                cache.crop(-extra)  # transformers 5: a negative count is how many to remove
            except (ValueError, RuntimeError):  # a cache kind that cannot roll back
                return DynamicCache(), 0
        return cache, same

    def put(self, adapter: str | None, ids: torch.Tensor, cache: DynamicCache) -> None:
        """Keep `cache`, which holds the keys and values of the first tokens of `ids` (1-D)."""
        length = cache.get_seq_length()
        if length == 0:
            return
        self._entries.append((adapter, ids[:length].clone(), cache, _nbytes(cache)))
        while len(self._entries) > self.max_entries or (
            len(self._entries) > 1 and sum(e[3] for e in self._entries) > self.max_bytes
        ):
            del self._entries[0]

    def clear(self) -> None:
        """Forget everything (adapters were loaded or removed)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _nbytes(cache: DynamicCache) -> int:
    return sum(t.nbytes for layer in getattr(cache, "layers", ()) for t in (layer.keys, layer.values)
               if isinstance(t, torch.Tensor))
