"""CPU engine on llama.cpp (llama-cpp-python): serves a GGUF file directly.

Why: on CPU, llama.cpp decodes the default model 2.6x as fast as transformers here (quantized
weights, no Python per layer), 4.8x where it generates from its AMX layout (`step_gguf`,
llama_cpp_model.py; bench/engine_llama_cpp.py). Reading prompts is not faster, so recent
prompts' KV caches are reused (llama_cpp_cache.py), as the transformers engine does.

Adapters are PEFT LoRA folders, converted to GGUF LoRA files when loaded (gguf_lora.py) and
held by llama.cpp next to the model; each request switches the context to its own adapter
(or none) before reading anything. All model work runs on one worker thread, one job at a
time (worker.py), so a switch never happens in the middle of a generation.

Tokens: the prompt is tokenized and the answer decoded with the Hugging Face tokenizer the
rest of the server uses (prompt trimming, stop strings), and the ids go to llama.cpp as they
are, so both engines see exactly the same tokens.
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from server.engines.base import CancelStats, Completion, EngineError, GenerationParams, LoraLimits
from server.engines.gguf_lora import BaseModelInfo, LoraConversionError, convert_peft_lora
from server.engines.llama_cpp_cache import KvReuse
from server.engines.llama_cpp_model import LlamaCppError, LlamaCppModel
from server.engines.free_cores import FreeCores, threads_for
from server.engines.token_watch import TokenWatch
from server.engines.worker import Job, SerialWorker

# Prompt tokens read per llama_decode before generation starts; a cancel is noticed between.
PREFILL_CHUNK = 128
# The layers a GGUF LoRA can adapt here (what gguf_lora.py converts and the tests check).
LORA_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})


class LlamaCppEngine:
    def __init__(self, model_dir: Path, gguf: Path, tokenizer, *, max_queue: int = 64, threads: int = 0, n_ctx: int = 4096,
                 step_gguf: Path | None = None):
        """`model_dir`: what adapters name as their base (the Hugging Face folder, or the GGUF
        file itself); `tokenizer`: the Hugging Face tokenizer of the model in `gguf`;
        `step_gguf`: generate from this GGUF (the same model) in llama.cpp's AMX layout,
        1.9x as fast where the CPU has AMX (llama_cpp_amx.py, step_weights)."""
        self.model_dir = Path(model_dir)
        self.gguf = Path(gguf)
        self.step_gguf = Path(step_gguf) if step_gguf is not None else None
        self.tokenizer = tokenizer
        self.model_name = self.model_dir.stem if self.model_dir.suffix == ".gguf" else self.model_dir.name
        self.base = BaseModelInfo.from_gguf(self.gguf)
        self.model_type = self.base.arch  # GGUF names architectures as transformers' model_type does
        self.threads = threads or os.cpu_count() or 1
        # threads=0: as many as the machine's other processes leave free (free_cores.py).
        self._free_cores = FreeCores() if not threads else None
        self.n_ctx = n_ctx
        self.max_queue = max_queue
        self.lora_limits = LoraLimits(max_rank=None, target_modules=LORA_MODULES)
        self.cancel_stats = CancelStats()
        self._worker = SerialWorker("codeloop-llama-cpp", max_queue)
        self._model: LlamaCppModel | None = None
        self._kv: KvReuse | None = None
        self._adapters: dict[str, object] = {}  # name -> llama.cpp adapter handle
        self._lora_dir: Path | None = None  # converted adapters, deleted once llama.cpp has read them
        self._conversions = itertools.count()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        # Loaded on the worker thread, where every later call runs: llama.cpp's OpenMP threads
        # belong to the thread that first computes with them (loading AMX weights does), and
        # with a second team of them alive in the process, all of them stop spinning between
        # operations and decoding gets 2-6x slower (measured; libgomp's "throttled" spinning).
        self._worker.start()
        try:
            self._model = await self._worker.submit(
                lambda job: LlamaCppModel(self.gguf, n_ctx=self.n_ctx, n_threads=self.threads, step_gguf=self.step_gguf),
                bounded=False)
        except LlamaCppError as exc:
            await self._worker.close()
            hint = "; set amx_decode = false to serve from one copy of the weights" if self.step_gguf else ""
            raise EngineError(f"{exc}{hint}") from exc
        self._kv = KvReuse(self._model)
        self._lora_dir = Path(tempfile.mkdtemp(prefix="codeloop-gguf-lora-"))
        # One short generation so the first real request does not pay for lazy initialisation.
        await self.complete("def", GenerationParams(max_tokens=1), None)

    async def close(self) -> None:
        await self._worker.close()
        if self._model is not None:
            self._model.close()
            self._model = None
        if self._lora_dir is not None:
            shutil.rmtree(self._lora_dir, ignore_errors=True)

    def queue_depth(self) -> int:
        return self._worker.depth()

    # -- generation ------------------------------------------------------------------------
    async def complete(self, prompt: str, params: GenerationParams, adapter: str | None) -> Completion:
        if adapter is not None and adapter not in self._adapters:
            raise EngineError(f"adapter {adapter!r} is not loaded")
        return await self._worker.submit(lambda job: self._generate(job, prompt, params, adapter), bounded=True)

    def _generate(self, job: Job, prompt: str, params: GenerationParams, adapter: str | None) -> Completion:
        started = time.monotonic()
        model, kv = self._model, self._kv
        ids: list[int] = self.tokenizer(prompt, add_special_tokens=False).input_ids
        if not ids:
            raise EngineError("the prompt is empty")
        if len(ids) >= model.n_ctx:
            raise EngineError(f"the prompt has {len(ids)} tokens; this engine's context holds {model.n_ctx}")
        max_tokens = min(params.max_tokens, model.n_ctx - len(ids))
        watch = TokenWatch(job, self.tokenizer, params)
        rng = np.random.default_rng(params.seed) if params.temperature > 0 else None
        held: list[int] = []  # the tokens whose keys and values the model holds
        generated: list[int] = []
        ended = False
        try:
            self._fit_threads()
            model.use_adapter(self._adapters[adapter] if adapter is not None else None)
            reused = kv.take(adapter, ids)
            held = ids[:reused]
            if self._prefill(ids, held, job):
                logits = model.decode([ids[-1]], len(held), logits=True)
                held.append(ids[-1])
                while True:
                    token = _pick(logits, params, rng)
                    generated.append(token)
                    ended = model.is_end_of_generation(token)
                    if ended or watch.stop_after(generated) or len(generated) >= max_tokens:
                        break
                    logits = model.decode([token], len(held), logits=True)
                    held.append(token)
        except LlamaCppError as exc:
            held = []  # what the model holds is not known for sure: start afresh next time
            raise EngineError(str(exc)) from exc
        finally:
            kv.put(adapter, held)
        return watch.completion(generated, ended=ended, prompt_tokens=len(ids), cached_prompt_tokens=reused,
                                started=started, adapter=adapter, stats=self.cancel_stats)

    def _fit_threads(self) -> None:
        if self._free_cores is None:
            return
        free = self._free_cores.free()
        if free is not None:
            self._model.set_threads(threads_for(free, self.threads))

    def _prefill(self, ids: list[int], held: list[int], job: Job) -> bool:
        """Read the prompt from len(held) up to, not including, its last token, PREFILL_CHUNK
        tokens at a time, checking for a cancel between chunks (an editor that typed on
        should not keep the engine busy for seconds). False: cancelled; `held` grows with
        what was read either way."""
        for start in range(len(held), len(ids) - 1, PREFILL_CHUNK):
            if job.cancel.is_set():
                return False
            chunk = ids[start:min(start + PREFILL_CHUNK, len(ids) - 1)]
            self._model.decode(chunk, start, logits=False)
            held.extend(chunk)
        return not job.cancel.is_set()

    # -- adapters --------------------------------------------------------------------------
    async def load_adapter(self, name: str, path: Path) -> None:
        await self._worker.submit(lambda job: self._load(name, Path(path)), bounded=False)

    def _load(self, name: str, path: Path) -> None:
        if name in self._adapters:
            raise EngineError(f"adapter {name!r} is already loaded (names are immutable versions)")
        converted = self._lora_dir / f"adapter-{next(self._conversions)}.gguf"
        try:
            convert_peft_lora(path, self.base, converted)
            self._adapters[name] = self._model.load_adapter(converted)
        except (LoraConversionError, LlamaCppError, OSError) as exc:
            raise EngineError(f"cannot serve {path} with llama.cpp: {exc}") from exc
        finally:
            converted.unlink(missing_ok=True)  # llama.cpp copied the weights into its own buffers

    async def unload_adapter(self, name: str) -> None:
        await self._worker.submit(lambda job: self._unload(name), bounded=False)

    def _unload(self, name: str) -> None:
        if name not in self._adapters:
            raise EngineError(f"adapter {name!r} is not loaded")
        self._model.free_adapter(self._adapters.pop(name))
        self._kv.forget(name)

    def adapters(self) -> list[str]:
        return sorted(self._adapters)


def load_tokenizer(model_dir: Path, gguf: Path):
    """The Hugging Face tokenizer of the model: from its folder when there is one (the default
    model's was written from its GGUF), else built from the GGUF's own vocabulary by
    transformers (which knows the GGUF tokenizers of the common architectures)."""
    from transformers import AutoTokenizer

    if Path(model_dir).is_dir():
        return AutoTokenizer.from_pretrained(model_dir)
    try:
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # transformers raises several kinds for GGUFs it cannot read
        raise EngineError(
            f"transformers cannot build a tokenizer from {gguf} ({exc}); put the GGUF into a folder with the "
            "model's Hugging Face files (config.json, tokenizer.json, tokenizer_config.json) and set `model` to that folder"
        ) from exc


def _pick(logits: np.ndarray, params: GenerationParams, rng: np.random.Generator | None) -> int:
    """The next token: the most likely one (greedy), or sampled with temperature and top-p."""
    if rng is None:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / params.temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if params.top_p < 1.0:
        # The most likely tokens whose probabilities first reach top_p (transformers' rule).
        order = np.argsort(-p)
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), params.top_p)) + 1]
        return int(keep[rng.choice(len(keep), p=p[keep] / p[keep].sum())])
    return int(rng.choice(len(p), p=p))
