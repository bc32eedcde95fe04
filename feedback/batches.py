"""The writer's FIFO: completions, event requests and admin calls in arrival order.

A batch is taken from the head and removed only once it is committed, so rows of a failed
write stay first in line for the retry, and nothing overtakes them.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

import duckdb


@dataclass
class EventsItem:
    rows: list[dict[str, Any]]
    future: Future[int] | None  # None once failed: the rows stay queued, the caller was told


@dataclass
class CallItem:
    fn: Callable[[duckdb.DuckDBPyConnection], Any]
    future: Future[Any]
    transaction: bool = True  # False: fn runs outside one (compaction ATTACHes another file)


Item = dict[str, Any] | EventsItem | CallItem  # a dict is a completion row


class WriteQueue:
    def __init__(self, batch_max: int, flush_interval_s: float, max_queued: int) -> None:
        self.batch_max = batch_max
        self.flush_interval_s = flush_interval_s
        self.max_queued = max_queued  # rows; beyond it new rows are refused, not buffered
        self._cond = threading.Condition()
        self._items: deque[Item] = deque()
        self.completions = 0  # queued rows of each kind
        self.events = 0
        self.closing = False

    def put(self, item: Item) -> bool:
        """Append; False (and nothing queued) when the rows would pass max_queued."""
        rows = 1 if isinstance(item, dict) else len(item.rows) if isinstance(item, EventsItem) else 0
        with self._cond:
            if self.closing:
                raise RuntimeError("telemetry writer is closed")
            if rows and self.completions + self.events + rows > self.max_queued:
                return False
            self._items.append(item)
            if isinstance(item, dict):
                self.completions += 1
            else:
                self.events += rows
            self._cond.notify()
            return True

    def close(self) -> None:
        with self._cond:
            self.closing = True
            self._cond.notify_all()

    def take(self) -> list[Item] | None:
        """The next batch, once there is one: a lone CallItem, or completions and event
        requests up to batch_max rows (a request is never split, so a batch may pass it).
        None when closing and empty."""
        with self._cond:
            while not self._items:
                if self.closing:
                    return None
                self._cond.wait()
            if isinstance(self._items[0], CallItem):
                return [self._items[0]]
            # Linger a little so that a burst becomes one transaction, not many.
            deadline = time.monotonic() + self.flush_interval_s
            while not self.closing and self.completions + self.events < self.batch_max:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[Item] = []
            rows = 0
            for item in self._items:
                if isinstance(item, CallItem) or rows >= self.batch_max:
                    break
                batch.append(item)
                rows += 1 if isinstance(item, dict) else len(item.rows)
            return batch

    def done(self, batch: list[Item]) -> None:
        """Remove a batch taken with take() (it is still at the head)."""
        with self._cond:
            for item in batch:
                self._items.popleft()
                if isinstance(item, dict):
                    self.completions -= 1
                elif isinstance(item, EventsItem):
                    self.events -= len(item.rows)

    def drain(self) -> tuple[list[Item], int]:
        """Remove everything; return the items and how many rows they held."""
        with self._cond:
            items, rows = list(self._items), self.completions + self.events
            self._items.clear()
            self.completions = self.events = 0
            return items, rows
