"""What the server records: a row per completion, validated events; both through the writer.

A completion is handed to the writer without waiting (the suggestion must not wait on the
database). An event is acknowledged only once the batch holding it is committed, and it
must refer to a completion this server made (the writer remembers recent suggestions, so an
event that arrives before its completion is on disk is still checked).

Scrubbing secrets from a completion's text is regex work over the whole prompt, so it runs
on one thread of its own, in arrival order, never on the event loop: a large prompt must not
hold up every other request (/healthz included). An event, and a forget, waits for the
completions it may concern to be through it.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone

from server.errors import DomainError, Problem
from server.metrics import ServerMetrics
from server.schemas import CompletionRequest, CompletionResponse, Event

log = logging.getLogger("codeloop.telemetry")


class EventError(DomainError):
    """Some events of a batch are impossible (Problem.INVALID) or not the sender's to report
    (Problem.FORBIDDEN); nothing of the batch was stored."""

    def __init__(self, problems: list[str], problem: Problem = Problem.INVALID):
        super().__init__(problem, "; ".join(problems))
        self.problems = problems


class Telemetry:
    def __init__(self, writer, metrics: ServerMetrics):
        # feedback.writer.TelemetryWriter: it scrubs secrets, and drops code when store_code is off
        self.writer = writer
        self.metrics = metrics
        self._scrubber = ThreadPoolExecutor(1, thread_name_prefix="codeloop-scrub")
        self._pending: dict[str, Future[None]] = {}  # completion id -> its row on the scrub thread

    async def record_completion(self, req: CompletionRequest, resp: CompletionResponse, prefix: str, suffix: str,
                                language: str | None, context: tuple[int, int] = (0, 0)) -> None:
        """Hand the completion to the scrub thread, which journals and queues it for the writer;
        returns once it has, so the answer leaves after its row is on disk (feedback/journal.py).
        The event loop is free meanwhile (scrubbing long input takes milliseconds)."""
        row = self._row(req, resp, prefix, suffix, language)
        row["context_snippets"], row["context_tokens"] = context
        future = self._scrubber.submit(self._add, row)
        self._pending[resp.id] = future
        # After the insertion: a future already done runs the callback at once.
        future.add_done_callback(lambda _, cid=resp.id: self._pending.pop(cid, None))
        await asyncio.wrap_future(future)

    async def settled(self, ids: set[str] | None = None) -> None:
        """Until the completions handed over so far (or those of `ids`) are queued for the writer."""
        futures = [f for cid, f in self._pending.copy().items() if ids is None or cid in ids]  # copy: one C call
        if futures:
            await asyncio.wait([asyncio.wrap_future(f) for f in futures])

    def close(self) -> None:
        """Scrub and queue what is still waiting (before the writer closes)."""
        self._scrubber.shutdown(wait=True)

    def _add(self, row: dict) -> None:
        try:
            secrets = self.writer.add_completion(row)  # scrubs, here on the scrub thread
        except Exception:  # a row the writer refuses: the suggestion was served all the same
            log.exception("telemetry: completion %s not recorded", row.get("id"))
            return
        for kind, count in secrets.items():
            self.metrics.secrets_scrubbed.labels(kind).inc(count)

    @staticmethod
    def _row(req: CompletionRequest, resp: CompletionResponse, prefix: str, suffix: str, language: str | None) -> dict:
        t = resp.timings
        return {
            "id": resp.id,
            "created_at": datetime.fromtimestamp(resp.created, tz=timezone.utc),
            "user_id": req.user,
            "client": req.client,
            "repo": req.repo,
            "filepath": req.segments.filepath if req.segments else None,
            "language": language,
            "adapter": resp.adapter,
            "experiment": resp.experiment,
            "arm": resp.arm,
            "prefix": prefix,  # lengths and hashes are derived by the writer
            "suffix": suffix,
            "text": resp.choices[0].text,
            "prompt_tokens": resp.usage.prompt_tokens,
            "completion_tokens": resp.usage.completion_tokens,
            "queue_ms": t.queue_ms,
            "engine_ms": t.engine_ms,
            "total_ms": t.total_ms,
            "first_token_ms": t.first_token_ms,
            "finish_reason": resp.choices[0].finish_reason,
        }

    def check_owner(self, events: list[Event], owner: str) -> None:
        """EventError (403) naming the events about someone else's completions."""
        owners = self.writer.completion_owners(list({e.completion_id for e in events}))
        others = [f"events[{i}] ({e.kind} of {e.completion_id})" for i, e in enumerate(events)
                  if owners.get(e.completion_id, owner) != owner]
        if others:
            raise EventError([f"{where}: that completion was made for another user; a token may report only "
                              "what became of its own user's suggestions" for where in others], Problem.FORBIDDEN)

    def validate(self, events: list[Event]) -> list[dict]:
        """Rows for the writer, or EventError naming every impossible event."""
        lengths = self.writer.completion_lengths(list({e.completion_id for e in events}))
        problems, rows = [], []
        for i, e in enumerate(events):
            where = f"events[{i}] ({e.kind} of {e.completion_id})"
            if e.completion_id not in lengths:
                problems.append(f"{where}: unknown completion_id; events must refer to an id returned by /v1/completions")
                continue
            length = lengths[e.completion_id]
            chars, kind = e.accepted_chars, e.kind
            if kind == "accepted" and chars is None:
                chars = length
            elif kind == "accepted" and length is not None and chars < length:
                kind = "partial"  # part of the suggestion was accepted: never counted as all of it
            if kind == "partial" and chars is None:
                problems.append(f"{where}: a partial accept needs accepted_chars")
            if chars is not None and length is not None and chars > length:
                problems.append(f"{where}: accepted_chars={chars} is longer than the suggestion ({length} chars)")
            if e.kind == "retained" and (e.retained_ratio is None or e.age_s is None):
                problems.append(f"{where}: a retained event needs retained_ratio (0..1) and age_s")
            rows.append({
                "completion_id": e.completion_id, "kind": kind, "at": e.at, "elapsed_ms": e.elapsed_ms,
                "accepted_chars": chars, "retained_ratio": e.retained_ratio, "age_s": e.age_s,
            })
        if problems:
            raise EventError(problems)
        return rows

    async def record_events(self, events: list[Event], owner: str | None = None) -> int:
        """Store the events; returns how many were new. Returns only once they are durable.
        `owner`: with auth on, a user token's user: events only for that user's completions."""
        # An event may come before its completion is through the scrub thread: the writer
        # must have the completion first, both to check the event and to store it after.
        await self.settled({e.completion_id for e in events})
        rows = self.validate(events)
        if owner is not None:
            self.check_owner(events, owner)
        return await asyncio.wrap_future(self.writer.add_events(rows))
