"""Embedded CPU engine: transformers + peft, several LoRA adapters in one PeftModel.

All model work (generation, adapter load/unload) runs on one worker thread, one job at a
time, in arrival order (server/engines/worker.py): an adapter is never loaded, switched or
removed while a generation is using the model.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, StoppingCriteria, StoppingCriteriaList

from server.engines.base import CancelStats, Completion, EngineError, GenerationParams, LoraLimits
from server.engines.prefix_cache import PrefixCache
from server.engines.token_watch import TokenWatch
from server.engines.worker import Job as _Job
from server.engines.worker import SerialWorker


# Prompt tokens read per step before generation starts; a cancel is noticed between steps.
PREFILL_CHUNK = 128


class _StopWhenWatched(StoppingCriteria):
    """generate()'s per-token hook: asks the TokenWatch about the tokens generated so far."""

    def __init__(self, watch: TokenWatch, prompt_len: int):
        self.watch, self.prompt_len = watch, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.tensor([self.watch.stop_after(input_ids[0, self.prompt_len:].tolist())], dtype=torch.bool)


class TransformersEngine:
    def __init__(self, model_dir: Path, *, max_queue: int = 64, torch_threads: int = 0):
        self.model_dir = Path(model_dir)
        self.max_queue = max_queue
        self.torch_threads = torch_threads or os.cpu_count() or 1
        self.cancel_stats = CancelStats()
        self._worker = SerialWorker("codeloop-engine", max_queue)
        self._adapters: dict[str, Path] = {}
        self._peft = None  # PeftModel once the first adapter is loaded
        self._prefix_cache = PrefixCache()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        # Adapters name their base by hub name or local path; both end in the folder name.
        self.model_name = self.model_dir.name
        self.model_type = ""
        self._model = None
        self.lora_limits = LoraLimits()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        torch.set_num_threads(self.torch_threads)
        self._model = await asyncio.to_thread(self._load_model)
        self.model_type = self._model.config.model_type
        # peft adapts any linear layer, at any rank.
        linear = {name.rsplit(".", 1)[-1] for name, m in self._model.named_modules() if isinstance(m, torch.nn.Linear)}
        self.lora_limits = LoraLimits(max_rank=None, target_modules=frozenset(linear))
        self._worker.start()
        # One short generation so the first real request does not pay for lazy initialisation.
        await self.complete("def", GenerationParams(max_tokens=1), None)

    def _load_model(self):
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        model.eval()
        return model

    async def close(self) -> None:
        await self._worker.close()

    def queue_depth(self) -> int:
        return self._worker.depth()

    # -- generation ------------------------------------------------------------------------
    async def complete(self, prompt: str, params: GenerationParams, adapter: str | None) -> Completion:
        if adapter is not None and adapter not in self._adapters:
            raise EngineError(f"adapter {adapter!r} is not loaded")
        return await self._worker.submit(lambda job: self._generate(job, prompt, params, adapter), bounded=True)

    def _generate(self, job: _Job, prompt: str, params: GenerationParams, adapter: str | None) -> Completion:
        started = time.monotonic()
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        prompt_len = ids.shape[1]
        watch = TokenWatch(job, self.tokenizer, params)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_tokens,
            stopping_criteria=StoppingCriteriaList([_StopWhenWatched(watch, prompt_len)]),
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        if params.temperature > 0:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode(), self._serving(adapter) as model:
            cache, reused = self._prefix_cache.take(adapter, ids)
            if self._prefill(model, ids, cache, reused, job):
                out = model.generate(input_ids=ids, cache=cache, **kwargs)
            else:  # cancelled while reading the prompt; what was read is kept all the same
                out = ids
            self._prefix_cache.put(adapter, out[0], cache)
        new_ids = out[0, prompt_len:].tolist()
        return watch.completion(new_ids, ended=bool(new_ids) and new_ids[-1] in self._eos_ids(), prompt_tokens=prompt_len,
                                cached_prompt_tokens=reused, started=started, adapter=adapter, stats=self.cancel_stats)

    @contextlib.contextmanager
    def _serving(self, adapter: str | None):
        """The model to run, with `adapter` switched on (None: the base, adapters off)."""
        if self._peft is None:
            yield self._model
        elif adapter is None:
            with self._peft.disable_adapter():
                yield self._peft
        else:
            self._peft.set_adapter(adapter)
            yield self._peft

    def _prefill(self, model, ids: torch.Tensor, cache: DynamicCache, start: int, job: _Job) -> bool:
        """Read the prompt from token `start` (what `cache` already holds) up to, not including,
        its last token, PREFILL_CHUNK tokens at a time, checking for a cancel between chunks:
        under load a long prompt can take seconds, and an editor that typed on should not keep
        the engine busy that long. False: cancelled (the cache holds what was read)."""
        for chunk in range(start, ids.shape[1] - 1, PREFILL_CHUNK):
            if job.cancel.is_set():
                return False
            model(input_ids=ids[:, chunk:min(chunk + PREFILL_CHUNK, ids.shape[1] - 1)], cache=cache, use_cache=True)
        return True

    def _eos_ids(self) -> set[int]:
        eos = self._model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    # -- adapters --------------------------------------------------------------------------
    async def load_adapter(self, name: str, path: Path) -> None:
        await self._worker.submit(lambda job: self._load(name, Path(path)), bounded=False)

    def _load(self, name: str, path: Path) -> None:
        from peft import PeftModel

        if name in self._adapters:
            raise EngineError(f"adapter {name!r} is already loaded (names are immutable versions)")
        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self._model, str(path), adapter_name=name)
                self._peft.eval()
            else:
                self._peft.load_adapter(str(path), adapter_name=name)
        except Exception as exc:
            raise EngineError(f"peft could not load {path}: {exc}") from exc
        self._adapters[name] = path
        self._prefix_cache.clear()

    async def unload_adapter(self, name: str) -> None:
        await self._worker.submit(lambda job: self._unload(name), bounded=False)

    def _unload(self, name: str) -> None:
        if name not in self._adapters:
            raise EngineError(f"adapter {name!r} is not loaded")
        if len(self._adapters) == 1:
            # peft cannot delete its last adapter; take the LoRA layers out instead.
            self._model = self._peft.unload()
            self._peft = None
        else:
            self._peft.delete_adapter(name)
        del self._adapters[name]
        self._prefix_cache.clear()

    def adapters(self) -> list[str]:
        return sorted(self._adapters)

