"""Engine `vllm-remote`: existing `vllm serve --enable-lora` servers (one, or replicas).

- Completions go to the replica with the fewest requests in flight, streamed, so that a
  cancelled request closes its connection and vLLM aborts the generation.
- Connection errors, timeouts before the first token and 5xx are retried on the next
  replica (`vllm_retries` times); 4xx are errors that say what vLLM said.
- Adapters are loaded on every replica with POST /v1/load_lora_adapter (the vLLM servers
  need VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and must be able to read the adapter folder:
  the same shared path, or `vllm_adapter_root` naming where they see `adapter_dir`).
- A restarted replica has forgotten its adapters: GET /v1/models is compared with what
  should be loaded at start, every `vllm_reconcile_s`, and when a replica answers 404 for
  an adapter (then the request is retried once).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from server.engines.base import CancelStats, Completion, EngineError, GenerationParams
from server.engines.vllm_common import ZERO_ADAPTER, AdapterUsage, write_zero_adapter

log = logging.getLogger(__name__)


@dataclass
class Replica:
    url: str
    http: httpx.AsyncClient
    in_flight: int = 0
    loaded: dict[str, str] = field(default_factory=dict)  # adapter name -> path vLLM read it from


class VllmRemoteEngine:
    def __init__(self, model_dir: Path, urls: list[str], *, served_model: str = "base", api_key: str | None = None,
                 timeout_s: float = 30.0, retries: int = 2, reconcile_s: float = 30.0,
                 adapter_dir: Path | None = None, adapter_root: str = "", zero_base_adapter: bool = True,
                 zero_adapter_dir: Path | None = None) -> None:
        if not urls:
            raise EngineError("engine vllm-remote needs vllm_urls: the base URLs of your `vllm serve` servers")
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.model_name = self.model_dir.name
        self.model_type = json.loads((self.model_dir / "config.json").read_text()).get("model_type", "")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)  # prompts are trimmed here
        self.served_model = served_model
        self.timeout_s, self.retries, self.reconcile_s = timeout_s, retries, reconcile_s
        self.adapter_dir, self.adapter_root = adapter_dir, adapter_root
        self.zero_base_adapter = zero_base_adapter
        self.zero_adapter_dir = zero_adapter_dir or (adapter_dir or self.model_dir.parent) / f".{ZERO_ADAPTER}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s))
        self.replicas = [Replica(url, httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, limits=httpx.Limits(max_connections=64)))
                         for url in (u.rstrip("/") for u in urls)]
        self.cancel_stats = CancelStats()
        self.usage = AdapterUsage()
        self._wanted: dict[str, Path] = {}  # adapters that should be loaded everywhere
        self._lock = asyncio.Lock()  # loads and unloads one at a time
        self._next = 0
        self._reconciler: asyncio.Task | None = None

    # --- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        for replica in self.replicas:
            await self._models(replica)  # fails start-up with a clear error if one is unreachable
        if self.zero_base_adapter:
            write_zero_adapter(self.model_dir, self.zero_adapter_dir)
            await self.load_adapter(ZERO_ADAPTER, self.zero_adapter_dir)
        self._reconciler = asyncio.create_task(self._reconcile_forever())

    async def close(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
        for replica in self.replicas:
            await replica.http.aclose()

    def adapters(self) -> list[str]:
        return sorted(n for n in self._wanted if n != ZERO_ADAPTER)

    def queue_depth(self) -> int:
        return sum(r.in_flight for r in self.replicas)

    # --- completions -------------------------------------------------------------------------
    async def complete(self, prompt: str, params: GenerationParams, adapter: str | None) -> Completion:
        model = adapter or (ZERO_ADAPTER if self.zero_base_adapter else self.served_model)
        body = {"model": model, "prompt": prompt, "max_tokens": params.max_tokens, "temperature": params.temperature,
                "top_p": params.top_p, "stop": list(params.stop) or None, "seed": params.seed,
                "stream": True, "stream_options": {"include_usage": True}}
        async with self.usage.using(model if model != self.served_model else None):
            problems = []
            for attempt in range(self.retries + 1):
                replica = self._pick()
                try:
                    return await self._stream(replica, body, adapter)
                except _Retry as exc:
                    problems.append(f"{replica.url}: {exc}")
                    if exc.missing_adapter and model in self._wanted:
                        await self._ensure(replica)
                    await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
            raise EngineError("vLLM did not answer: " + "; ".join(problems))

    def _pick(self) -> Replica:
        start, n = self._next, len(self.replicas)
        self._next = (self._next + 1) % n
        return min((self.replicas[(start + i) % n] for i in range(n)), key=lambda r: r.in_flight)

    async def _stream(self, replica: Replica, body: dict, adapter: str | None) -> Completion:
        started = time.perf_counter()
        first_token_at = None
        pieces, finish, usage = [], "length", {}
        replica.in_flight += 1
        try:
            async with replica.http.stream("POST", "/v1/completions", json=body) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise _classify(resp)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        if choice.get("text"):
                            first_token_at = first_token_at or time.perf_counter()
                            pieces.append(choice["text"])
                        if choice.get("finish_reason"):
                            finish = "stop" if choice["finish_reason"] == "stop" else "length"
        except asyncio.CancelledError:  # closing the stream aborts it in vLLM
            self.cancel_stats.cancelled += 1
            self.cancel_stats.cancelled_tokens.append(len(pieces))  # about one token per streamed chunk
            raise
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            if pieces:  # it had started: a retry would start over; say what happened
                raise EngineError(f"vLLM at {replica.url} broke off mid-answer: {type(exc).__name__}") from None
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        finally:
            replica.in_flight -= 1
        done = time.perf_counter()
        return Completion(
            text="".join(pieces), finish_reason=finish, prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)), queue_ms=0.0,
            engine_ms=round((done - started) * 1000, 2),
            first_token_ms=round((first_token_at - started) * 1000, 2) if first_token_at else None, adapter=adapter)

    # --- adapters ------------------------------------------------------------------------------
    async def load_adapter(self, name: str, path: Path) -> None:
        async with self._lock:
            results = await asyncio.gather(*(self._load_on(r, name, path) for r in self.replicas), return_exceptions=True)
            failed = [(r, e) for r, e in zip(self.replicas, results) if isinstance(e, Exception)]
            if failed:
                for replica, result in zip(self.replicas, results):
                    if not isinstance(result, Exception):
                        await self._unload_on(replica, name)
                raise EngineError("; ".join(f"vLLM at {r.url} could not load {name!r}: {e}" for r, e in failed))
            self._wanted[name] = Path(path)

    async def unload_adapter(self, name: str) -> None:
        # Wait outside the lock: a request in flight may need it to reload the adapter (404).
        if not await self.usage.wait_idle(name, self.timeout_s):
            log.warning("unloading %s with requests still in flight after %.0fs", name, self.timeout_s)
        async with self._lock:
            self._wanted.pop(name, None)
            await asyncio.gather(*(self._unload_on(r, name) for r in self.replicas))

    def _remote_path(self, path: Path) -> str:
        if self.adapter_root and self.adapter_dir is not None:
            try:
                return str(Path(self.adapter_root) / Path(path).resolve().relative_to(Path(self.adapter_dir).resolve()))
            except ValueError:
                pass
        return str(Path(path).resolve())

    async def _load_on(self, replica: Replica, name: str, path: Path) -> None:
        remote = self._remote_path(path)
        if replica.loaded.get(name) == remote:
            return
        if name in replica.loaded:  # loaded from elsewhere (a stale copy): replace it
            await self._unload_on(replica, name)
        resp = await self._post(replica, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": remote})
        if resp.status_code != 200 and "already been loaded" not in resp.text:
            raise EngineError(f"HTTP {resp.status_code}: {_message(resp)}")
        replica.loaded[name] = remote

    async def _unload_on(self, replica: Replica, name: str) -> None:
        try:
            await self._post(replica, "/v1/unload_lora_adapter", {"lora_name": name})
        except EngineError as exc:  # an unreachable replica forgets it anyway when it restarts
            log.warning("unload of %s on %s: %s", name, replica.url, exc)
        replica.loaded.pop(name, None)

    async def _post(self, replica: Replica, path: str, body: dict) -> httpx.Response:
        try:
            return await replica.http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise EngineError(f"vLLM at {replica.url} unreachable: {type(exc).__name__}: {exc}") from None

    async def _models(self, replica: Replica) -> None:
        """Refresh what the replica has loaded (GET /v1/models: LoRA entries carry their path in `root`)."""
        try:
            resp = await replica.http.get("/v1/models")
        except httpx.HTTPError as exc:
            raise EngineError(f"vLLM at {replica.url} unreachable: {type(exc).__name__}: {exc}; is `vllm serve` running there?") from None
        if resp.status_code != 200:
            raise EngineError(f"vLLM at {replica.url}: GET /v1/models gave HTTP {resp.status_code}: {_message(resp)}")
        models = resp.json().get("data", [])
        ids = {m.get("id") for m in models}
        if self.served_model not in ids:
            raise EngineError(f"vLLM at {replica.url} serves {sorted(ids)}, not {self.served_model!r}: start it with --served-model-name {self.served_model}")
        replica.loaded = {m["id"]: m.get("root", "") for m in models if m.get("parent")}  # LoRA entries name their base

    async def _reconcile_replica(self, replica: Replica) -> list[str]:
        """Load what `replica` is missing (the caller holds the lock); what was reloaded."""
        done = []
        try:
            await self._models(replica)
            for name, path in self._wanted.items():
                if replica.loaded.get(name) != self._remote_path(path):
                    await self._load_on(replica, name, path)
                    done.append(f"{name} reloaded on {replica.url}")
        except EngineError as exc:
            log.warning("reconcile %s: %s", replica.url, exc)
        for line in done:
            log.warning(line)
        return done

    async def _ensure(self, replica: Replica) -> None:
        """After a 404 for an adapter: the replica restarted, so restore all it forgot."""
        async with self._lock:
            await self._reconcile_replica(replica)

    async def reconcile(self) -> list[str]:
        """Load what each replica is missing (after a vLLM restart); returns what was done."""
        async with self._lock:
            return [line for replica in self.replicas for line in await self._reconcile_replica(replica)]

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_s)
            try:
                await self.reconcile()
            except Exception:  # keep reconciling; each failure is logged
                log.exception("reconcile failed")


class _Retry(Exception):
    def __init__(self, message: str, missing_adapter: bool = False):
        super().__init__(message)
        self.missing_adapter = missing_adapter


def _classify(resp: httpx.Response) -> Exception:
    message = _message(resp)
    if resp.status_code == 404:
        return _Retry(f"HTTP 404: {message}", missing_adapter=True)
    if resp.status_code >= 500 or resp.status_code == 429:
        return _Retry(f"HTTP {resp.status_code}: {message}")
    return EngineError(f"vLLM refused the request (HTTP {resp.status_code}): {message}")


def _message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
        error = data.get("error", data) if isinstance(data, dict) else data
        return str(error.get("message", error) if isinstance(error, dict) else error)[:500]
    except ValueError:
        return resp.text[:500]
