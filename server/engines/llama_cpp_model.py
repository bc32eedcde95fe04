"""A thin typed layer over llama.cpp's C API (llama-cpp-python's ctypes bindings, which
mirror llama.h): one model with one sequence, LoRA adapters, and the sequence's KV cache as
bytes for prompt reuse.

The C API rather than llama-cpp-python's `Llama` class: the engine needs its own token loop
(cancellation, stop checks and deadlines between tokens), per-request adapters, and KV
snapshots; `Llama` keeps its own copies of tokens and logits (n_batch x vocab floats) and
tokenizes itself, all of which would have to be worked around. Not thread-safe: used from
the engine's one worker thread.

With `step_gguf`, the model is loaded twice: once as usual, to read prompts in batches, and
once with its matrices in llama.cpp's AMX layout (llama_cpp_amx.py), to read one token at a
time 1.9x as fast. The sequence lives in one of the two contexts at a time and is copied
over (~40 microseconds a token each way) when the other one is needed, which happens about
once a request: after the prompt was read in batches, before generation.
"""
from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np

SEQ = 0  # the one sequence: prompts are served one at a time
# New prompt tokens after a reused start are read one at a time where the sequence is, unless
# reading them in a batch saves more than moving the sequence there and back costs. Measured
# here for the default model: a token read alone ~8 ms, in a batch ~2 ms, plus ~15 ms a batch;
# moving the sequence ~40 microseconds a token it holds, each way.
STEP_MS, BATCH_TOKEN_MS, BATCH_MS, MOVE_MS_PER_TOKEN = 8.0, 2.0, 15.0, 0.04


def _read_alone(new: int, held: int) -> bool:
    """Whether `new` tokens after `held` ones are read faster one at a time than moved over."""
    return new * STEP_MS <= BATCH_MS + new * BATCH_TOKEN_MS + 2 * held * MOVE_MS_PER_TOKEN


class LlamaCppError(Exception):
    """llama.cpp refused or failed; the message says what."""


def _lib():
    import llama_cpp

    # llama.cpp logs every tensor it loads; llama-cpp-python routes its log through this logger.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    return llama_cpp


class _Context:
    """One model loaded by llama.cpp and one context on it, holding sequence SEQ."""

    def __init__(self, gguf: Path, *, n_ctx: int, n_threads: int, n_batch: int, overrides=None):
        lib = self._lib = _lib()
        lib.llama_backend_init()
        model_params = lib.llama_model_default_params()
        # No extra weight buffer types unless asked for by name (`overrides`): llama.cpp would
        # put the matrices into the AMX layout, whose code crashes reading more than one token
        # at a time here (llama_cpp_amx.py), in llama-cpp-python's own Llama class too.
        model_params.use_extra_bufts = False
        if overrides is not None:
            model_params.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
        self._overrides = overrides  # llama.cpp keeps the model's parameters, pointers included
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
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        self._mem = lib.llama_get_memory(self._ctx)
        self._batch = lib.llama_batch_init(n_batch, 0, 1)

    def close(self) -> None:
        if self._ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._lib.llama_model_free(self._model)  # frees its adapters too
            self._ctx = self._model = None

    def set_threads(self, n_threads: int) -> None:
        self._lib.llama_set_n_threads(self._ctx, n_threads, n_threads)

    def read(self, tokens: list[int], start: int, logits: bool) -> np.ndarray | None:
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

    def truncate(self, length: int) -> None:
        if not self._lib.llama_memory_seq_rm(self._mem, SEQ, length, -1):
            self._lib.llama_memory_seq_rm(self._mem, SEQ, -1, -1)  # a whole sequence always goes
            raise LlamaCppError(f"llama.cpp could not cut its KV cache at {length}")

    def cached_length(self) -> int:
        return int(self._lib.llama_memory_seq_pos_max(self._mem, SEQ)) + 1

    def save_state(self) -> bytes:
        size = self._lib.llama_state_seq_get_size(self._ctx, SEQ)
        buffer = (ctypes.c_uint8 * size)()
        written = self._lib.llama_state_seq_get_data(self._ctx, buffer, size, SEQ)
        return bytes(memoryview(buffer)[:written])

    def load_state(self, state: bytes) -> None:
        self._lib.llama_memory_seq_rm(self._mem, SEQ, -1, -1)
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if not self._lib.llama_state_seq_set_data(self._ctx, buffer, len(state), SEQ):
            self._lib.llama_memory_seq_rm(self._mem, SEQ, -1, -1)
            raise LlamaCppError("llama.cpp could not restore a saved KV cache")

    def load_adapter(self, gguf_lora: Path):
        handle = self._lib.llama_adapter_lora_init(self._model, str(gguf_lora).encode())
        if not handle:
            raise LlamaCppError(f"llama.cpp could not load the LoRA {gguf_lora} (see the log above for why)")
        return handle

    def free_adapter(self, handle) -> None:
        self._lib.llama_adapter_lora_free(handle)

    def use_adapter(self, handle) -> None:
        if handle is None:
            rc = self._lib.llama_set_adapters_lora(self._ctx, None, 0, None)
        else:
            adapters = (self._lib.llama_adapter_lora_p_ctypes * 1)(handle)
            scales = (ctypes.c_float * 1)(1.0)
            rc = self._lib.llama_set_adapters_lora(self._ctx, adapters, 1, scales)
        if rc != 0:
            raise LlamaCppError(f"llama.cpp could not switch adapters ({rc})")


class LlamaCppModel:
    def __init__(self, gguf: Path, *, n_ctx: int = 4096, n_threads: int = 2, n_batch: int = 512,
                 step_gguf: Path | None = None):
        """`step_gguf`: read single tokens from this GGUF (the same weights, in the same or
        another quantization) loaded in llama.cpp's AMX layout; see llama_cpp_amx.py for
        where that is available (amx_buffer_type, unsuitable)."""
        self._batch = _Context(gguf, n_ctx=n_ctx, n_threads=n_threads, n_batch=n_batch)
        self._step: _Context | None = None
        if step_gguf is not None:
            from server.engines.llama_cpp_amx import amx_buffer_type, weights_override

            buft = amx_buffer_type()
            if buft is None:
                self._batch.close()
                raise LlamaCppError("this CPU or this build of llama.cpp has no AMX weight layout")
            try:
                # n_batch = n_ubatch = 1: llama.cpp never runs more than one token on these weights.
                self._step = _Context(step_gguf, n_ctx=self._batch.n_ctx, n_threads=n_threads, n_batch=1,
                                      overrides=weights_override(buft))
            except LlamaCppError:
                self._batch.close()
                raise
        self._current = self._batch  # the context that holds the sequence
        self.n_ctx = self._batch.n_ctx
        self.n_batch = n_batch
        self.n_threads = n_threads
        self.n_vocab = self._batch.n_vocab
        self._adapter = None  # the adapter the contexts run with now

    @property
    def steps_on_amx(self) -> bool:
        """Whether single tokens are read from the AMX layout."""
        return self._step is not None

    def set_threads(self, n_threads: int) -> None:
        """Run the next decodes with `n_threads` threads (a no-op when it is already so)."""
        if n_threads != self.n_threads:
            for context in self._contexts():
                context.set_threads(n_threads)
            self.n_threads = n_threads

    def close(self) -> None:
        for context in self._contexts():
            context.close()

    def _contexts(self) -> list[_Context]:
        return [self._batch] + ([self._step] if self._step is not None else [])

    # -- the model's facts ---------------------------------------------------------------------
    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._batch._lib.llama_vocab_is_eog(self._batch._vocab, token))

    def n_ctx_train(self) -> int:
        return int(self._batch._lib.llama_model_n_ctx_train(self._batch._model))

    # -- reading tokens ------------------------------------------------------------------------
    def decode(self, tokens: list[int], start: int, *, logits: bool) -> np.ndarray | None:
        """Read `tokens` at positions start, start + 1, ... (at most n_batch of them) into the
        KV cache; with `logits`, return the last one's next-token logits (a copy)."""
        if not tokens or len(tokens) > self.n_batch:
            raise ValueError(f"decode takes 1 to {self.n_batch} tokens, not {len(tokens)}")
        if start + len(tokens) > self.n_ctx:
            raise LlamaCppError(f"{start + len(tokens)} tokens do not fit the context of {self.n_ctx}")
        step = self._step is not None and (
            len(tokens) == 1 or (self._current is self._step and _read_alone(len(tokens), start)))
        if not step:
            return self._hold_in(self._batch).read(tokens, start, logits)
        context, out = self._hold_in(self._step), None
        for i, token in enumerate(tokens):
            out = context.read([token], start + i, logits and i == len(tokens) - 1)
        return out

    def _hold_in(self, context: _Context) -> _Context:
        """Make `context` hold the sequence, copied from the other one if that held it."""
        if context is not self._current:
            held = self._current.cached_length()
            if held > 0:
                context.load_state(self._current.save_state())
            else:
                context.truncate(0)
            self._current = context
        return context

    # -- the KV cache --------------------------------------------------------------------------
    def truncate(self, length: int) -> None:
        """Keep the keys and values of the first `length` positions only."""
        self._current.truncate(length)

    def cached_length(self) -> int:
        return self._current.cached_length()

    def save_state(self) -> bytes:
        """The sequence's KV cache as bytes (llama.cpp's own format)."""
        return self._current.save_state()

    def load_state(self, state: bytes) -> None:
        """Replace the sequence's KV cache with one from save_state."""
        self._current.load_state(state)

    # -- LoRA adapters -------------------------------------------------------------------------
    def load_adapter(self, gguf_lora: Path):
        """Load a GGUF LoRA file; returns its handle (the file is no longer needed after)."""
        handles = []
        try:
            for context in self._contexts():
                handles.append(context.load_adapter(gguf_lora))
        except LlamaCppError:
            for context, handle in zip(self._contexts(), handles):
                context.free_adapter(handle)
            raise
        return tuple(handles)

    def free_adapter(self, handle) -> None:
        if self._adapter is handle:
            self.use_adapter(None)
        for context, one in zip(self._contexts(), handle):
            context.free_adapter(one)

    def use_adapter(self, handle) -> None:
        """Run the next decodes with this adapter at scale 1 (None: the base model)."""
        for i, context in enumerate(self._contexts()):
            context.use_adapter(None if handle is None else handle[i])
        self._adapter = handle
