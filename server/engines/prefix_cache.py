"""Reuse of the last prompt's KV cache by the embedded engine.

An editor sends nearly the same prompt keystroke after keystroke: the file above the cursor,
plus what was typed since. Reading a 500-token prompt takes about a second on two CPU cores,
longer than the pause in which a suggestion has to arrive, so the engine keeps the KV cache
of the last prompt it read (per adapter: LoRA changes the keys and values) and the next
prompt only reads the tokens after the part they share. Tokens the model generated count
too: when the user types what was suggested, the new prompt starts with them.

This only pays when prompts start the same way; the language server and the prompt trimming
keep the start of the window fixed while the user types for that reason.

Used from the engine's single worker thread only, so it needs no lock.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from transformers import DynamicCache

# A few adapters at once: the live one plus the arms of an experiment.
MAX_ENTRIES = 4


class PrefixCache:
    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        # adapter (None = base) -> (the tokens whose keys and values `cache` holds, cache)
        self._entries: OrderedDict[str | None, tuple[torch.Tensor, DynamicCache]] = OrderedDict()

    def take(self, adapter: str | None, ids: torch.Tensor) -> tuple[DynamicCache, int]:
        """A cache holding the longest start of `ids` (shape 1 x n) already read with this
        adapter, and its length. At most n - 1 tokens: the model has to read the last prompt
        token itself to produce the first new one. The entry is taken out: the caller
        extends the cache in place and puts it back with `put`."""
        entry = self._entries.pop(adapter, None)
        if entry is None:
            return DynamicCache(), 0
        cached_ids, cache = entry
        limit = min(len(cached_ids), ids.shape[1] - 1)
        same = int((cached_ids[:limit] == ids[0, :limit]).long().cumprod(0).sum()) if limit > 0 else 0
        if same == 0:
            return DynamicCache(), 0
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
        self._entries.pop(adapter, None)
        self._entries[adapter] = (ids[:length].clone(), cache)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (adapters were loaded or removed)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
