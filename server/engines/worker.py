"""One worker thread that runs an embedded engine's jobs, one at a time, in arrival order.

That is what makes hot-loading safe in the embedded engines (transformers, llama.cpp): an
adapter is never loaded, switched or removed while a generation is using the model, and a
request queued before an unload still runs with its adapter.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from server.engines.base import EngineBusy, EngineError


@dataclass
class Job:
    run: Callable[["Job"], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    cancelled_at: float | None = None
    waiting: bool = True  # counted in the queue depth


class SerialWorker:
    def __init__(self, name: str, max_queue: int):
        self.name, self.max_queue = name, max_queue
        self._queue: queue.Queue[Job | None] = queue.Queue()
        # Jobs waiting that someone still awaits: a cancelled job stays in the queue (skipped
        # when reached) but no longer counts against max_queue, or abandoned work would
        # refuse live requests with 429.
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None

    def depth(self) -> int:
        return self._waiting

    async def submit(self, run: Callable[[Job], Any], *, bounded: bool) -> Any:
        """Run `run(job)` on the worker thread and return its result. Bounded jobs (requests)
        are refused with EngineBusy beyond max_queue waiting; if the awaiting task is
        cancelled, job.cancel is set for `run` to notice."""
        if self._thread is None:
            raise EngineError("the engine is not started")
        with self._waiting_lock:
            if bounded and self._waiting >= self.max_queue:
                raise EngineBusy(f"{self._waiting} requests are already waiting for the engine; retry shortly")
            self._waiting += 1
        loop = asyncio.get_running_loop()
        job = Job(run=run, loop=loop, future=loop.create_future())
        self._queue.put(job)
        try:
            return await job.future
        except asyncio.CancelledError:
            self._leave_queue(job)
            job.cancelled_at = time.monotonic()
            job.cancel.set()
            raise

    def _leave_queue(self, job: Job) -> None:
        with self._waiting_lock:
            if job.waiting:
                job.waiting = False
                self._waiting -= 1

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


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():  # the request went away meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
