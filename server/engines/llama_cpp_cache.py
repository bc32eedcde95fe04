"""Reuse of recent prompts' KV caches by the llama.cpp engine (the idea of prefix_cache.py).

An editor sends nearly the same prompt keystroke after keystroke, so a new prompt only
reads the tokens after the longest start it shares with a prompt read before (with the
same adapter: LoRA changes the keys and values). Tokens the model generated count too.

llama.cpp holds one sequence's KV cache in its context: the "live" entry, which the next
request usually extends (the same editor typing on), at no cost. The other recent prompts
(other editors, or the live one before a different prompt replaced it) are kept as
snapshots of that sequence (llama_state_seq_get_data: ~23 kB a token for the default
model) and copied back when a prompt shares more with one of them. A snapshot is taken
only when the live entry is about to be overwritten or cut by much.

Used from the engine's single worker thread only, so it needs no lock.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.engines.llama_cpp_model import LlamaCppModel

MAX_ENTRIES = 8
MAX_BYTES = 512 * 2**20  # the default model: 8 prompts of 2,000 tokens fit
# A live entry that would lose more than this many tokens to a new prompt is saved first,
# so the editor it came from can still reuse it whole (see prefix_cache.py).
KEEP_IF_LOSING = 64


@dataclass
class _Snapshot:
    adapter: str | None
    tokens: np.ndarray  # the tokens whose keys and values `state` holds
    state: bytes


class KvReuse:
    def __init__(self, model: LlamaCppModel, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES):
        self.model, self.max_entries, self.max_bytes = model, max_entries, max_bytes
        # What the model's sequence holds now: (adapter, tokens), None when unknown or empty.
        self._live: tuple[str | None, np.ndarray] | None = None
        self._saved: list[_Snapshot] = []  # least recently used first

    def take(self, adapter: str | None, ids: list[int]) -> int:
        """Set the model's sequence to hold the longest start of `ids` already read with this
        adapter (at most len(ids) - 1 tokens: the last prompt token must be read to produce
        the first new one); returns its length. The caller reads on from there and then says
        what the sequence holds with `put`."""
        wanted = np.asarray(ids, dtype=np.int64)
        limit = len(ids) - 1
        live_shared = self._shared(self._live[1], wanted, limit) if self._live and self._live[0] == adapter else 0
        best, best_shared = None, live_shared
        for i, snap in enumerate(self._saved):
            if snap.adapter == adapter:
                shared = self._shared(snap.tokens, wanted, limit)
                if shared > best_shared:
                    best, best_shared = i, shared
        if best is None:  # the live entry (or nothing) is the best start
            if self._live is not None and len(self._live[1]) - live_shared > KEEP_IF_LOSING:
                self._save_live()
            self.model.truncate(live_shared)
        else:
            snap = self._saved.pop(best)
            if len(snap.tokens) - best_shared > KEEP_IF_LOSING:
                # Others may come back for all of it: keep the snapshot (most recent now).
                self._saved.append(snap)
            # else it becomes the live entry, saved again when something replaces it
            self._save_live()
            self.model.load_state(snap.state)
            self.model.truncate(best_shared)
        self._live = None  # until `put`: a failed read leaves it unknown
        return best_shared

    def put(self, adapter: str | None, tokens: list[int]) -> None:
        """The model's sequence holds the keys and values of `tokens` (read with `adapter`)."""
        self._live = (adapter, np.asarray(tokens, dtype=np.int64)) if tokens else None

    def forget(self, adapter: str | None) -> None:
        """Drop what was read with this adapter (it was unloaded; its name may come back)."""
        self._saved = [s for s in self._saved if s.adapter != adapter]
        if self._live is not None and self._live[0] == adapter:
            self._live = None
            self.model.truncate(0)

    def clear(self) -> None:
        self._saved.clear()
        self._live = None
        self.model.truncate(0)

    def __len__(self) -> int:
        return len(self._saved) + (self._live is not None)

    def saved_bytes(self) -> int:
        return sum(len(s.state) for s in self._saved)

    def _save_live(self) -> None:
        if self._live is None:
            return
        adapter, tokens = self._live
        # Snapshots of shorter starts of the same text are superseded by this one.
        self._saved = [s for s in self._saved
                       if not (s.adapter == adapter and len(s.tokens) <= len(tokens) and np.array_equal(s.tokens, tokens[:len(s.tokens)]))]
        self._saved.append(_Snapshot(adapter, tokens, self.model.save_state()))
        while len(self._saved) > self.max_entries or (len(self._saved) > 1 and self.saved_bytes() > self.max_bytes):
            del self._saved[0]

    @staticmethod
    def _shared(cached: np.ndarray, wanted: np.ndarray, limit: int) -> int:
        n = min(len(cached), limit)
        if n <= 0:
            return 0
        differs = np.flatnonzero(cached[:n] != wanted[:n])
        return int(differs[0]) if len(differs) else n
