"""Engine `vllm`: vLLM's AsyncLLM in this process, LoRA adapters as LoRARequests.

Install with `pip install -e '.[gpu]'` on a GPU machine. Adapter names are immutable
versions and each gets its own integer id, never reused (vLLM caches adapters by id; reusing
one served requests with the wrong weights, vLLM issue #47724). A cancelled request is
aborted in the engine (AsyncLLM.generate aborts when its consumer is cancelled).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from pathlib import Path

from server.engines.base import CancelStats, Completion, EngineError, GenerationParams
from server.engines.vllm_common import ZERO_ADAPTER, AdapterUsage, write_zero_adapter

log = logging.getLogger(__name__)


class VllmEngine:
    def __init__(self, model_dir: Path, *, max_loras: int = 4, max_cpu_loras: int = 8, max_lora_rank: int = 16,
                 dtype: str = "auto", max_model_len: int = 4096, gpu_memory_utilization: float = 0.85,
                 zero_base_adapter: str = "auto", zero_adapter_dir: Path | None = None) -> None:
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise EngineError(f"engine 'vllm' needs vLLM in this environment (pip install -e '.[gpu]'): {exc}") from None
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.model_name = self.model_dir.name
        self.model_type = json.loads((self.model_dir / "config.json").read_text()).get("model_type", "")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.options = dict(max_loras=max_loras, max_cpu_loras=max_cpu_loras, max_lora_rank=max_lora_rank,
                            dtype=dtype, max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization)
        self.zero_base_setting = zero_base_adapter
        self.zero_adapter_dir = zero_adapter_dir or self.model_dir.parent / f".{ZERO_ADAPTER}"
        self.zero_base_adapter = False
        self.cancel_stats = CancelStats()
        self.usage = AdapterUsage()
        self._engine = None
        self._loras: dict[str, object] = {}  # name -> LoRARequest
        self._ids = itertools.count(1)  # never reused, see the module docstring
        self._lock = asyncio.Lock()
        self._running = 0

    async def start(self) -> None:
        from vllm import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(model=str(self.model_dir), tokenizer=str(self.model_dir), enable_lora=True,
                               disable_log_stats=True, **self.options)
        self._engine = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
        on_cpu = current_platform.is_cpu()
        self.zero_base_adapter = self.zero_base_setting == "on" or (self.zero_base_setting == "auto" and on_cpu)
        if self.zero_base_adapter:
            write_zero_adapter(self.model_dir, self.zero_adapter_dir)
            await self.load_adapter(ZERO_ADAPTER, self.zero_adapter_dir)

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    def adapters(self) -> list[str]:
        return sorted(n for n in self._loras if n != ZERO_ADAPTER)

    def queue_depth(self) -> int:
        return self._running

    async def complete(self, prompt: str, params: GenerationParams, adapter: str | None) -> Completion:
        from vllm import SamplingParams

        name = adapter or (ZERO_ADAPTER if self.zero_base_adapter else None)
        if name is not None and name not in self._loras:
            raise EngineError(f"adapter {name!r} is not loaded")
        sampling = SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                                  stop=list(params.stop) or None, seed=params.seed)
        async with self.usage.using(name):
            started = time.perf_counter()
            first_token_at, final, checked_stop, out_of_time = None, None, False, False
            request_id = f"codeloop-{uuid.uuid4().hex}"
            self._running += 1
            try:
                async for output in self._engine.generate(prompt, sampling, request_id,
                                                          lora_request=self._loras.get(name) if name else None):
                    if first_token_at is None and output.outputs and output.outputs[0].token_ids:
                        first_token_at = time.perf_counter()
                    final = output
                    if params.stop_check and not output.finished and output.outputs and params.stop_check(output.outputs[0].text):
                        checked_stop = True
                        break
                    if params.past_deadline() and not output.finished and output.outputs and output.outputs[0].token_ids:
                        out_of_time = True
                        break
                if checked_stop or out_of_time:
                    await self._engine.abort(request_id)
            except asyncio.CancelledError:
                self.cancel_stats.cancelled += 1  # generate() has aborted the request in the engine
                self.cancel_stats.cancelled_tokens.append(len(final.outputs[0].token_ids) if final and final.outputs else 0)
                raise
            except Exception as exc:
                raise EngineError(f"vLLM failed: {type(exc).__name__}: {exc}") from None
            finally:
                self._running -= 1
        done = time.perf_counter()
        out = final.outputs[0]
        return Completion(
            text=out.text, finish_reason="stop" if checked_stop or out.finish_reason == "stop" else "length",
            prompt_tokens=len(final.prompt_token_ids or []), completion_tokens=len(out.token_ids), queue_ms=0.0,
            engine_ms=round((done - started) * 1000, 2),
            first_token_ms=round((first_token_at - started) * 1000, 2) if first_token_at else None, adapter=adapter,
            cached_prompt_tokens=getattr(final, "num_cached_tokens", None) or 0)  # vLLM's prefix caching

    async def load_adapter(self, name: str, path: Path) -> None:
        from vllm.lora.request import LoRARequest

        async with self._lock:
            if name in self._loras:
                raise EngineError(f"adapter {name!r} is already loaded")
            request = LoRARequest(lora_name=name, lora_int_id=next(self._ids), lora_path=str(Path(path).resolve()))
            try:
                await self._engine.add_lora(request)
            except Exception as exc:
                raise EngineError(f"vLLM could not load adapter {name!r}: {exc}") from None
            self._loras[name] = request

    async def unload_adapter(self, name: str) -> None:
        async with self._lock:
            request = self._loras.get(name)
            if request is None:
                raise EngineError(f"adapter {name!r} is not loaded")
            if not await self.usage.wait_idle(name, 60):
                log.warning("unloading %s with requests still in flight after 60s", name)
            del self._loras[name]
            await self._engine.remove_lora(request.lora_int_id)
