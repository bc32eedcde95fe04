"""A thin typed layer over llama.cpp's C API (llama-cpp-python's ctypes bindings, which
mirror llama.h): one model, one context with one sequence, LoRA adapters, and the
sequence's KV cache as bytes for prompt reuse.

The C API rather than llama-cpp-python's `Llama` class: the engine needs its own token loop
(cancellation, stop checks and deadlines between tokens), per-request adapters, and KV
snapshots; `Llama` keeps its own copies of tokens and logits (n_batch x vocab floats) and
tokenizes itself, all of which would have to be worked around. Not thread-safe: used from
the engine's one worker thread.
"""
from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np

SEQ = 0  # the one sequence: prompts are served one at a time


class LlamaCppError(Exception):
    """llama.cpp refused or failed; the message says what."""


def _lib():
    import llama_cpp

    # llama.cpp logs every tensor it loads; llama-cpp-python routes its log through this logger.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    return llama_cpp


class LlamaCppModel:
    def __init__(self, gguf: Path, *, n_ctx: int = 4096, n_threads: int = 2, n_batch: int = 512):
        lib = self._lib = _lib()
        lib.llama_backend_init()
        model_params = lib.llama_model_default_params()
        # No extra weight buffer types (AMX, repacking): on this project's CPU machines
        # (Sapphire Rapids) llama.cpp's AMX path crashes reading any batch of more than one
        # token, in llama-cpp-python's own Llama class too; the plain CPU path is what was
        # measured and tested.
        model_params.use_extra_bufts = False
        self._model = lib.llama_model_load_from_file(str(gguf).encode(), model_params)
        if not self._model:
            raise LlamaCppError(f"llama.cpp could not load {gguf}")
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = n_threads
        params.no_perf = True
        # Flash attention off: llama.cpp's "auto" turns it on, and on these CPUs it decodes a
        # token at 1,200 tokens of context in 26 ms against 16.5 ms without it (reading a
        # prompt is ~20 % faster with it). Typing reuses the prompt, so decoding is what the
        # user waits for (bench/engine_llama_cpp.py).
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._ctx = lib.llama_init_from_model(self._model, params)
        if not self._ctx:
            lib.llama_model_free(self._model)
            raise LlamaCppError(f"llama.cpp could not create a context of {n_ctx} tokens for {gguf}")
        self.n_ctx = lib.llama_n_ctx(self._ctx)
        self.n_batch = n_batch
        self.n_threads = n_threads
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        self._mem = lib.llama_get_memory(self._ctx)
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self._adapter = None  # the adapter the context runs with now

    def set_threads(self, n_threads: int) -> None:
        """Run the next decodes with `n_threads` threads (a no-op when it is already so)."""
        if n_threads != self.n_threads:
            self._lib.llama_set_n_threads(self._ctx, n_threads, n_threads)
            self.n_threads = n_threads

    def close(self) -> None:
        if self._ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._lib.llama_model_free(self._model)  # frees its adapters too
            self._ctx = self._model = None

    # -- the model's facts ---------------------------------------------------------------------
    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def n_ctx_train(self) -> int:
        return int(self._lib.llama_model_n_ctx_train(self._model))

    # -- reading tokens ------------------------------------------------------------------------
    def decode(self, tokens: list[int], start: int, *, logits: bool) -> np.ndarray | None:
        """Read `tokens` at positions start, start + 1, ... (at most n_batch of them) into the
        KV cache; with `logits`, return the last one's next-token logits (a copy)."""
        if not tokens or len(tokens) > self.n_batch:
            raise ValueError(f"decode takes 1 to {self.n_batch} tokens, not {len(tokens)}")
        if start + len(tokens) > self.n_ctx:
            raise LlamaCppError(f"{start + len(tokens)} tokens do not fit the context of {self.n_ctx}")
        batch = self._batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = SEQ
            batch.logits[i] = 0
        batch.logits[len(tokens) - 1] = int(logits)
        rc = self._lib.llama_decode(self._ctx, batch)
        if rc != 0:
            # Whatever part was read stays in the cache; the caller's bookkeeping says how much
            # it trusts, so drop everything from `start` on.
            self.truncate(start)
            raise LlamaCppError(f"llama_decode failed ({rc}) reading {len(tokens)} tokens at position {start}")
        if not logits:
            return None
        row = self._lib.llama_get_logits_ith(self._ctx, -1)
        return np.ctypeslib.as_array(row, shape=(self.n_vocab,)).copy()

    # -- the KV cache --------------------------------------------------------------------------
    def truncate(self, length: int) -> None:
        """Keep the keys and values of the first `length` positions only."""
        if not self._lib.llama_memory_seq_rm(self._mem, SEQ, length, -1):
            self._lib.llama_memory_seq_rm(self._mem, SEQ, -1, -1)  # a whole sequence always goes
            raise LlamaCppError(f"llama.cpp could not cut its KV cache at {length}")

    def cached_length(self) -> int:
        return int(self._lib.llama_memory_seq_pos_max(self._mem, SEQ)) + 1

    def save_state(self) -> bytes:
        """The sequence's KV cache as bytes (llama.cpp's own format)."""
        size = self._lib.llama_state_seq_get_size(self._ctx, SEQ)
        buffer = (ctypes.c_uint8 * size)()
        written = self._lib.llama_state_seq_get_data(self._ctx, buffer, size, SEQ)
        return bytes(memoryview(buffer)[:written])

    def load_state(self, state: bytes) -> None:
        """Replace the sequence's KV cache with one from save_state."""
        self._lib.llama_memory_seq_rm(self._mem, SEQ, -1, -1)
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if not self._lib.llama_state_seq_set_data(self._ctx, buffer, len(state), SEQ):
            self._lib.llama_memory_seq_rm(self._mem, SEQ, -1, -1)
            raise LlamaCppError("llama.cpp could not restore a saved KV cache")

    # -- LoRA adapters -------------------------------------------------------------------------
    def load_adapter(self, gguf_lora: Path):
        """Load a GGUF LoRA file; returns its handle (the file is no longer needed after)."""
        handle = self._lib.llama_adapter_lora_init(self._model, str(gguf_lora).encode())
        if not handle:
            raise LlamaCppError(f"llama.cpp could not load the LoRA {gguf_lora} (see the log above for why)")
        return handle

    def free_adapter(self, handle) -> None:
        if self._adapter is handle:
            self.use_adapter(None)
        self._lib.llama_adapter_lora_free(handle)

    def use_adapter(self, handle) -> None:
        """Run the next decodes with this adapter at scale 1 (None: the base model)."""
        if handle is None:
            rc = self._lib.llama_set_adapters_lora(self._ctx, None, 0, None)
        else:
            adapters = (self._lib.llama_adapter_lora_p_ctypes * 1)(handle)
            scales = (ctypes.c_float * 1)(1.0)
            rc = self._lib.llama_set_adapters_lora(self._ctx, adapters, 1, scales)
        if rc != 0:
            raise LlamaCppError(f"llama.cpp could not switch adapters ({rc})")
        self._adapter = handle
