"""Embedded CPU engine: transformers + peft, several LoRA adapters in one PeftModel.

All model work (generation, adapter load/unload) runs on one worker thread, one job at a
time, in arrival order. That is what makes hot-loading safe here: an adapter is never
loaded, switched or removed while a generation is using the model, and a request queued
before an unload still runs with its adapter.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, StoppingCriteria, StoppingCriteriaList

from server.engines.base import CancelStats, Completion, EngineBusy, EngineError, GenerationParams, LoraLimits
from server.engines.prefix_cache import PrefixCache


# Prompt tokens read per step before generation starts; a cancel is noticed between steps.
PREFILL_CHUNK = 128


@dataclass
class _Job:
    run: Callable[["_Job"], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    cancelled_at: float | None = None
    waiting: bool = True  # counted in the engine's queue depth


class _TokenWatch(StoppingCriteria):
    """Called once per generated token: stops on cancel, a stop string, the caller's
    stop_check or its deadline; times the first token."""

    def __init__(self, job: _Job, prompt_len: int, tokenizer, params: GenerationParams):
        self.job, self.prompt_len, self.tokenizer = job, prompt_len, tokenizer
        self.params = params
        self.tokens = 0
        self.first_token_at: float | None = None
        self.tokens_after_cancel = 0
        self.hit_stop = False

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        now = time.monotonic()
        self.tokens += 1
        if self.first_token_at is None:
            self.first_token_at = now
        cancelled = self.job.cancel.is_set()
        if cancelled and self.job.cancelled_at is not None and now >= self.job.cancelled_at:
            self.tokens_after_cancel += 1
        if self.params.stop and not cancelled:
            # Decoding the tail is cheap next to a forward pass; only the last ~16 tokens can
            # complete a stop string that was not there a token ago.
            tail = self.tokenizer.decode(input_ids[0, max(self.prompt_len, input_ids.shape[1] - 16):])
            self.hit_stop = any(s in tail for s in self.params.stop)
        if self.params.stop_check and not (cancelled or self.hit_stop) and "\n" in self.tokenizer.decode(input_ids[0, -1:]):
            # The callers' checks look at whole lines, so only a new line can change the answer.
            generated = self.tokenizer.decode(input_ids[0, self.prompt_len:], skip_special_tokens=True)
            self.hit_stop = self.params.stop_check(generated)
        return torch.tensor([cancelled or self.hit_stop or self.params.past_deadline()], dtype=torch.bool)


class TransformersEngine:
    def __init__(self, model_dir: Path, *, max_queue: int = 64, torch_threads: int = 0):
        self.model_dir = Path(model_dir)
        self.max_queue = max_queue
        self.torch_threads = torch_threads or os.cpu_count() or 1
        self.cancel_stats = CancelStats()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        # Jobs waiting that someone still awaits: a cancelled job stays in the queue (skipped
        # when reached) but no longer counts against max_queue, or abandoned work would
        # refuse live requests with 429.
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._thread: threading.Thread | None = None
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
        self._thread = threading.Thread(target=self._work, name="codeloop-engine", daemon=True)
        self._thread.start()
        # One short generation so the first real request does not pay for lazy initialisation.
        await self.complete("def", GenerationParams(max_tokens=1), None)

    def _load_model(self):
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        model.eval()
        return model

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None

    def queue_depth(self) -> int:
        return self._waiting

    def _leave_queue(self, job: _Job) -> None:
        with self._waiting_lock:
            if job.waiting:
                job.waiting = False
                self._waiting -= 1

    # -- the worker thread -----------------------------------------------------------------
    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            self._leave_queue(job)
            if job.future.done():  # cancelled while waiting: never started
                continue
            try:
                result = job.run(job)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
                job.loop.call_soon_threadsafe(_settle, job.future, None, exc)
            else:
                job.loop.call_soon_threadsafe(_settle, job.future, result, None)

    async def _submit(self, run: Callable[[_Job], Any], *, bounded: bool) -> Any:
        if self._thread is None:
            raise EngineError("the engine is not started")
        with self._waiting_lock:
            if bounded and self._waiting >= self.max_queue:
                raise EngineBusy(f"{self._waiting} requests are already waiting for the engine; retry shortly")
            self._waiting += 1
        loop = asyncio.get_running_loop()
        job = _Job(run=run, loop=loop, future=loop.create_future())
        self._queue.put(job)
        try:
            return await job.future
        except asyncio.CancelledError:
            self._leave_queue(job)
            job.cancelled_at = time.monotonic()
            job.cancel.set()
            raise

    # -- generation ------------------------------------------------------------------------
    async def complete(self, prompt: str, params: GenerationParams, adapter: str | None) -> Completion:
        if adapter is not None and adapter not in self._adapters:
            raise EngineError(f"adapter {adapter!r} is not loaded")
        return await self._submit(lambda job: self._generate(job, prompt, params, adapter), bounded=True)

    def _generate(self, job: _Job, prompt: str, params: GenerationParams, adapter: str | None) -> Completion:
        started = time.monotonic()
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        prompt_len = ids.shape[1]
        watch = _TokenWatch(job, prompt_len, self.tokenizer, params)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_tokens,
            stopping_criteria=StoppingCriteriaList([watch]),
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
        new_ids = out[0, prompt_len:]
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        finish = "length"
        if job.cancel.is_set():
            finish = "cancelled"
            self.cancel_stats.cancelled += 1
            self.cancel_stats.tokens_after_cancel.append(watch.tokens_after_cancel)
            self.cancel_stats.cancelled_tokens.append(len(new_ids))
        elif watch.hit_stop or (len(new_ids) and int(new_ids[-1]) in self._eos_ids()):
            finish = "stop"
        for s in params.stop:
            if s in text:
                text, finish = text[: text.index(s)], "stop"
        done = time.monotonic()
        return Completion(
            text=text,
            finish_reason=finish,
            prompt_tokens=prompt_len,
            completion_tokens=len(new_ids),
            queue_ms=(started - job.enqueued) * 1000,
            engine_ms=(done - started) * 1000,
            first_token_ms=None if watch.first_token_at is None else (watch.first_token_at - started) * 1000,
            adapter=adapter,
            cached_prompt_tokens=reused,
        )

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
        await self._submit(lambda job: self._load(name, Path(path)), bounded=False)

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
        await self._submit(lambda job: self._unload(name), bounded=False)

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


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():  # the request went away meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
