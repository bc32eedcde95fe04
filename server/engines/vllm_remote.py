"""Engine `vllm-remote`: existing `vllm serve --enable-lora` servers (one, or replicas).

- Completions go to the replica with the fewest requests in flight, streamed, so that a
  cancelled request closes its connection and vLLM aborts the generation.
- Failover: a replica whose connection fails or times out is marked down (GET /healthz lists
  the replicas) and the request is retried on another (`vllm_retries` times), also when the
  replica broke off mid-answer: codeloop answers clients with whole completions, so nothing
  of the broken answer has reached the client and starting over elsewhere is safe (greedy
  or seeded, the new answer is the same). 5xx and 429 are retried too; other 4xx are errors
  that say what vLLM said.
- Adapters are loaded on every replica that is up with POST /v1/load_lora_adapter (the vLLM
  servers need VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and must be able to read the adapter
  folder: the same shared path, or `vllm_adapter_root` naming where they see `adapter_dir`).
  A replica that cannot be reached during a load (e.g. killed mid-load) is marked down and
  the load succeeds on the others; one that refuses it undoes the load everywhere.
- A restarted replica has forgotten its adapters: GET /v1/models is compared with what
  should be loaded at start, every `vllm_reconcile_s`, and when a replica answers 404 for
  an adapter (then the request is retried once). A replica that was down gets requests again
  only once it answers and has every adapter back.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from server.engines.base import (
    CancelStats,
    Completion,
    EngineError,
    EngineUnavailable,
    GenerationParams,
)
from server.engines.vllm_common import ZERO_ADAPTER, AdapterUsage, write_zero_adapter

log = logging.getLogger(__name__)
# No token spells more than this many characters (whitespace runs are the longest): a replica
# that streams more than max_tokens * this is cut off there.
MAX_CHARS_PER_TOKEN = 128


@dataclass
class Replica:
    url: str
    http: httpx.AsyncClient
    in_flight: int = 0
    loaded: dict[str, str] = field(default_factory=dict)  # adapter name -> path vLLM read it from
    up: bool = True
    down_since: float | None = None
    last_error: str = ""
    served: int = 0  # completions it answered
    failed: int = 0  # attempts that failed on it (then retried elsewhere, or given up)

    def status(self) -> dict:
        return {"url": self.url, "up": self.up, "in_flight": self.in_flight, "served": self.served, "failed": self.failed,
                "down_since": self.down_since, "last_error": self.last_error or None, "adapters": sorted(self.loaded)}


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
        self._lock = asyncio.Lock()  # loads, unloads and reconciles one at a time
        self._next = 0
        self._reconciler: asyncio.Task | None = None

    # --- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        # One unreachable replica of several does not stop codeloop (it is marked down and
        # comes back when it answers); a replica that answers wrongly does (a setup error).
        results = await asyncio.gather(*(self._models(r) for r in self.replicas), return_exceptions=True)
        for replica, result in zip(self.replicas, results):
            if isinstance(result, EngineUnavailable):
                self._mark_down(replica, str(result))
            elif isinstance(result, Exception):
                raise result
        if not any(r.up for r in self.replicas):
            raise EngineError("; ".join(r.last_error for r in self.replicas))
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

    def replica_status(self) -> list[dict]:
        """Each replica: up or down (since when, why), requests in flight, adapters loaded."""
        return [r.status() for r in self.replicas]

    def _mark_down(self, replica: Replica, why: str) -> None:
        replica.last_error = why
        if replica.up:
            log.warning("vLLM replica %s is down: %s", replica.url, why)
            replica.up, replica.down_since = False, time.time()
            replica.loaded = {}  # a restarted vLLM has forgotten them; reconcile reads them again

    def _mark_up(self, replica: Replica) -> None:
        if not replica.up:
            log.warning("vLLM replica %s is back, with its adapters", replica.url)
        replica.up, replica.down_since, replica.last_error = True, None, ""

    # --- completions -------------------------------------------------------------------------
    async def complete(self, prompt: str, params: GenerationParams, adapter: str | None) -> Completion:
        model = adapter or (ZERO_ADAPTER if self.zero_base_adapter else self.served_model)
        body = {"model": model, "prompt": prompt, "max_tokens": params.max_tokens, "temperature": params.temperature,
                "top_p": params.top_p, "stop": list(params.stop) or None, "seed": params.seed,
                "stream": True, "stream_options": {"include_usage": True}}
        async with self.usage.using(model if model != self.served_model else None):
            problems: list[str] = []
            tried: set[str] = set()
            for attempt in range(self.retries + 1):
                replica = self._pick(tried)
                tried.add(replica.url)
                try:
                    return await self._stream(replica, body, adapter, params)
                except _Retry as exc:
                    replica.failed += 1
                    problems.append(f"{replica.url}: {exc}")
                    if exc.down:
                        self._mark_down(replica, str(exc))
                    if exc.missing_adapter and model in self._wanted:
                        await self._ensure(replica)
                        tried.discard(replica.url)  # it has the adapter now: worth asking again
                    elif not any(r.up and r.url not in tried for r in self.replicas):
                        await asyncio.sleep(min(0.2 * 2**attempt, 2.0))  # nobody fresh to ask: back off
            raise EngineUnavailable("vLLM did not answer: " + "; ".join(problems))

    def _pick(self, tried: set[str]) -> Replica:
        """Fewest in flight among the replicas that are up and not yet tried for this request;
        failing that, any up one; with all down, any (one may be back before reconcile saw it)."""
        up = [r for r in self.replicas if r.up]
        pool = ([r for r in up if r.url not in tried] or up
                or [r for r in self.replicas if r.url not in tried] or self.replicas)
        start = self._next
        self._next = (self._next + 1) % len(self.replicas)
        order = {id(r): (i - start) % len(self.replicas) for i, r in enumerate(self.replicas)}
        return min(pool, key=lambda r: (r.in_flight, order[id(r)]))

    async def _stream(self, replica: Replica, body: dict, adapter: str | None, params: GenerationParams) -> Completion:
        started = time.perf_counter()
        first_token_at = None
        pieces, finish, usage = [], "length", {}
        streamed, max_chars = 0, params.max_tokens * MAX_CHARS_PER_TOKEN
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
                    new_text, reason, chunk_usage = parse_chunk(data, replica.url)
                    usage = chunk_usage or usage
                    if new_text:
                        first_token_at = first_token_at or time.perf_counter()
                        pieces.append(new_text)
                        streamed += len(new_text)
                    if reason:
                        finish = "stop" if reason == "stop" else "length"
                    if streamed > max_chars:
                        # More than max_tokens tokens can spell: a replica gone wrong. Answer
                        # with what is in bounds rather than read on.
                        log.warning("vLLM replica %s streamed over %d characters for max_tokens %d; cut",
                                    replica.url, max_chars, params.max_tokens)
                        pieces, finish = ["".join(pieces)[:max_chars]], "length"
                        break
                    if params.stop_check and finish == "length" and "\n" in new_text and params.stop_check("".join(pieces)):
                        finish = "stop"
                        break  # leaving the stream closes it, which aborts the request in vLLM
                    if pieces and params.past_deadline():
                        break  # out of time: answer with what there is ("length")
        except asyncio.CancelledError:  # closing the stream aborts it in vLLM
            self.cancel_stats.cancelled += 1
            self.cancel_stats.cancelled_tokens.append(len(pieces))  # about one token per streamed chunk
            raise
        except httpx.PoolTimeout as exc:  # our own connection pool is full: not the replica's fault
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        except httpx.TransportError as exc:
            # Also mid-answer: the client gets whole completions, so it has seen nothing yet.
            where = f" after {len(pieces)} tokens" if pieces else ""
            raise _Retry(f"{type(exc).__name__}{where}: {exc}", down=True) from None
        finally:
            replica.in_flight -= 1
        replica.served += 1
        done = time.perf_counter()
        if "prompt_tokens" not in usage:  # stopped early: the stream ended before vLLM's usage chunk
            usage["prompt_tokens"] = len(self.tokenizer(body["prompt"], add_special_tokens=False).input_ids)
        return Completion(
            text="".join(pieces), finish_reason=finish, prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage.get("completion_tokens", len(pieces))), queue_ms=0.0,  # ~a token a chunk
            engine_ms=round((done - started) * 1000, 2),
            first_token_ms=round((first_token_at - started) * 1000, 2) if first_token_at else None, adapter=adapter)

    # --- adapters ------------------------------------------------------------------------------
    async def load_adapter(self, name: str, path: Path) -> None:
        """Load on every replica that is up. One that cannot be reached is marked down (it gets
        the adapter when it is back); one that refuses undoes the load on the others."""
        async with self._lock:
            targets = [r for r in self.replicas if r.up]
            results = await asyncio.gather(*(self._load_on(r, name, path) for r in targets), return_exceptions=True)
            loaded = [r for r, e in zip(targets, results) if not isinstance(e, BaseException)]
            refused = [(r, e) for r, e in zip(targets, results) if isinstance(e, BaseException) and not isinstance(e, EngineUnavailable)]
            for replica, result in zip(targets, results):
                if isinstance(result, EngineUnavailable):
                    self._mark_down(replica, str(result))
            if refused or not loaded:
                for replica in loaded:
                    await self._unload_on(replica, name)
                if refused:
                    raise EngineError("; ".join(f"vLLM at {r.url} could not load {name!r}: {e}" for r, e in refused))
                down = "; ".join(f"{r.url}: {r.last_error}" for r in self.replicas)
                raise EngineUnavailable(f"no vLLM replica is up to load {name!r} on ({down})")
            self._wanted[name] = Path(path)

    async def unload_adapter(self, name: str) -> None:
        # Wait outside the lock: a request in flight may need it to reload the adapter (404).
        if not await self.usage.wait_idle(name, self.timeout_s):
            log.warning("unloading %s with requests still in flight after %.0fs", name, self.timeout_s)
        async with self._lock:
            self._wanted.pop(name, None)
            # A down replica is skipped: restarted, it has forgotten the adapter anyway.
            await asyncio.gather(*(self._unload_on(r, name) for r in self.replicas if r.up))

    def _remote_path(self, path: Path) -> str:
        if self.adapter_root and self.adapter_dir is not None:
            try:
                return str(Path(self.adapter_root) / Path(path).resolve().relative_to(Path(self.adapter_dir).resolve()))
            except ValueError:
                pass
        return str(Path(path).resolve())

    def _has(self, replica: Replica, name: str, path: Path) -> bool:
        have = replica.loaded.get(name)
        # Every codeloop's zero adapter is the same all-zero LoRA of this model, so one loaded
        # from another path (another codeloop sharing these replicas) serves as well; replacing
        # it would make two codeloops take turns unloading it under each other's requests.
        return have == self._remote_path(path) or (name == ZERO_ADAPTER and have is not None)

    async def _load_on(self, replica: Replica, name: str, path: Path) -> None:
        if self._has(replica, name, path):
            return
        if name in replica.loaded:  # loaded from elsewhere (a stale copy): replace it
            await self._unload_on(replica, name)
        remote = self._remote_path(path)
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
            raise EngineUnavailable(f"vLLM at {replica.url} unreachable: {type(exc).__name__}: {exc}") from None

    async def _models(self, replica: Replica) -> None:
        """Refresh what the replica has loaded (GET /v1/models: LoRA entries carry their path in `root`)."""
        try:
            resp = await replica.http.get("/v1/models")
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"vLLM at {replica.url} unreachable: {type(exc).__name__}: {exc}; is `vllm serve` running there?") from None
        if resp.status_code != 200:
            raise EngineError(f"vLLM at {replica.url}: GET /v1/models gave HTTP {resp.status_code}: {_message(resp)}")
        models = resp.json().get("data", [])
        ids = {m.get("id") for m in models}
        if self.served_model not in ids:
            raise EngineError(f"vLLM at {replica.url} serves {sorted(ids)}, not {self.served_model!r}: start it with --served-model-name {self.served_model}")
        replica.loaded = {m["id"]: m.get("root", "") for m in models if m.get("parent")}  # LoRA entries name their base

    async def _reconcile_replica(self, replica: Replica) -> list[str]:
        """Load what `replica` is missing (the caller holds the lock); what was reloaded. A
        replica that was down is up again once it answers and has every adapter back."""
        done = []
        try:
            await self._models(replica)
            for name, path in self._wanted.items():
                if not self._has(replica, name, path):
                    await self._load_on(replica, name, path)
                    done.append(f"{name} reloaded on {replica.url}")
            self._mark_up(replica)
        except EngineUnavailable as exc:
            self._mark_down(replica, str(exc))
        except EngineError as exc:  # it answers but refuses: keep a down one out of rotation
            replica.last_error = str(exc)
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
        done = []
        for replica in self.replicas:
            if not replica.up and not await self._answers(replica):
                continue  # still down; asked without the lock, so a black-holed host holds up no load
            async with self._lock:
                done += await self._reconcile_replica(replica)
        return done

    async def _answers(self, replica: Replica) -> bool:
        try:
            return (await replica.http.get("/v1/models")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_s)
            try:
                await self.reconcile()
            except Exception:  # keep reconciling; each failure is logged
                log.exception("reconcile failed")


def parse_chunk(data: str, url: str) -> tuple[str, str | None, dict | None]:
    """(text, finish_reason, usage) of one server-sent completion chunk. A chunk that is not
    the OpenAI shape is the replica's fault: _Retry marks it down and asks another."""
    try:
        chunk = json.loads(data)
        choices = chunk.get("choices") or []
        texts = [c.get("text") or "" for c in choices]
        reasons = [c.get("finish_reason") for c in choices if c.get("finish_reason")]
        usage = chunk.get("usage") or None
        if not all(isinstance(t, str) for t in texts) or (usage is not None and not isinstance(usage, dict)):
            raise TypeError("text is not a string or usage not an object")
        if usage is not None:  # counted as ints below
            usage = {k: int(v) for k, v in usage.items() if k in ("prompt_tokens", "completion_tokens")}
    except (ValueError, TypeError, AttributeError) as exc:
        raise _Retry(f"malformed stream chunk from {url} ({type(exc).__name__}: {exc}): {data[:120]!r}", down=True) from None
    return "".join(texts), (str(reasons[-1]) if reasons else None), usage


class _Retry(Exception):
    def __init__(self, message: str, missing_adapter: bool = False, down: bool = False):
        super().__init__(message)
        self.missing_adapter, self.down = missing_adapter, down


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
