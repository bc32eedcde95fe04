"""Blind review: people compare two adapters' suggestions for the same lines without knowing
which adapter wrote which.

An admin creates a review from held-out lines answered by both adapters (`codeloop review
create`); each reviewer is handed the shown tasks in order, each with its two answers as
"left" and "right" (which is A is drawn per task at creation, with the secrets module, and
never changes), votes, and only then sees what the author wrote. Nothing a reviewer receives
names the adapters: not the review's name (it usually does), not a/b. Votes are stored as
a/b, so the report never needs the screen positions.

Everything lives in the telemetry database (feedback/review_rows.py): writes go through the
telemetry writer's thread, where a vote's checks (review open, task shown, not voted yet) and
its insert form one transaction; reads use the writer's reader cursors.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from typing import Any, TypeVar

import duckdb

from feedback import review_rows, review_scores, review_stats
from feedback.review_rows import ReviewCounts, ReviewRow, TaskRow
from feedback.secrets import scrub
from server.errors import DomainError, Problem
from server.schemas import ReviewTaskIn

T = TypeVar("T")
BEFORE_LINES, AFTER_LINES = 30, 10  # what a reviewer sees around the cursor
SIDES = {"left": True, "right": False}  # choice -> "is it the left answer"


class ReviewError(DomainError):
    """A review request cannot be honoured; `problem` says why (server/errors.py)."""


class ReviewService:
    def __init__(self, writer) -> None:
        self.writer = writer  # feedback.writer.TelemetryWriter
        # Automatic scores per review: its tasks never change, and scoring 1000 of them (CodeBLEU
        # parses every answer) takes about a second, so each review is scored once per process,
        # by the first report that needs it; a trainer waiting for a verdict polls the report.
        self._scores: dict[str, dict[int, tuple[review_scores.AnswerScore, review_scores.AnswerScore]]] = {}
        self._scoring: dict[str, asyncio.Lock] = {}

    # --- admin -------------------------------------------------------------------------------
    async def create(self, *, a: str, b: str, name: str | None, repo: str | None, since: str | None,
                     tasks: Sequence[ReviewTaskIn]) -> dict:
        if a == b:
            raise ReviewError(Problem.INVALID, f"'a' and 'b' are both {a!r}: a review compares two different adapters")
        review = ReviewRow(id=f"rev-{secrets.token_hex(6)}", name=name or f"{b} vs {a}", adapter_a=a, adapter_b=b,
                           repo=None if repo is None else scrub(repo)[0], since=since, created_at=time.time(),
                           status="open")
        # Scrubbing is regex work over every prefix and suffix: off the event loop.
        rows = await asyncio.to_thread(_task_rows, tasks)
        await self._write(lambda con: review_rows.insert_review(con, review, rows))
        return await self.summary(review.id)

    async def list(self) -> list[dict]:
        return [_summary(c) for c in await self._read(review_rows.summaries)]

    async def summary(self, review_id: str) -> dict:
        return _summary(await self._counts(review_id))

    async def close(self, review_id: str) -> dict:
        """Take no more votes. Closing a closed review changes nothing (a retry is harmless)."""
        def run(con: duckdb.DuckDBPyConnection) -> None:
            if review_rows.status_of(con, review_id) is None:
                raise _unknown(review_id)
            review_rows.set_status(con, review_id, "closed")

        await self._write(run)
        return await self.summary(review_id)

    async def delete(self, review_id: str) -> dict:
        """Delete the review with its tasks and votes: the repository code it holds goes too."""
        def run(con: duckdb.DuckDBPyConnection) -> dict:
            summary = review_rows.summaries(con, review_id)
            if not summary:
                raise _unknown(review_id)
            review_rows.delete_review(con, review_id)
            return _summary(summary[0])

        deleted = await self._write(run)
        self._scores.pop(review_id, None)
        return {**deleted, "deleted": True}

    async def report(self, review_id: str) -> dict:
        counts = await self._counts(review_id)

        def read(cursor: duckdb.DuckDBPyConnection) -> tuple[list[review_rows.TaskAnswers], dict]:
            return review_rows.report_tasks(cursor, review_id), review_rows.vote_counts(cursor, review_id)

        tasks, votes = await self._read(read)
        async with self._scoring.setdefault(review_id, asyncio.Lock()):
            if review_id not in self._scores:
                self._scores[review_id] = await asyncio.to_thread(review_scores.score_tasks, tasks)
        return review_stats.build_report(_summary(counts), tasks, votes, self._scores[review_id])

    # --- reviewers ---------------------------------------------------------------------------
    async def next_task(self, review_id: str, reviewer: str) -> dict:
        """The reviewer's next shown task without a vote of theirs, in task order; None when
        they have voted on every one or the review is closed."""
        def read(cursor: duckdb.DuckDBPyConnection) -> tuple[str, TaskRow | None, tuple[int, int]]:
            status = review_rows.status_of(cursor, review_id)
            if status is None:
                raise _unknown(review_id)
            task = review_rows.next_task(cursor, review_id, reviewer) if status == "open" else None
            return status, task, review_rows.progress(cursor, review_id, reviewer)

        status, task, (done, total) = await self._read(read)
        return {"review": {"id": review_id, "name": f"Review {review_id}", "status": status},
                "progress": {"done": done, "total": total},
                "task": None if task is None else _blind(task)}

    async def vote(self, review_id: str, task_id: int, reviewer: str, choice: str) -> dict:
        """Record `choice` ("left", "right", "tie" or "skip") as a/b; returns what the author wrote."""
        def run(con: duckdb.DuckDBPyConnection) -> tuple[str, tuple[int, int]]:
            status = review_rows.status_of(con, review_id)
            if status is None:
                raise _unknown(review_id)
            if status != "open":
                raise ReviewError(Problem.CONFLICT, f"review {review_id!r} is closed and takes no more votes")
            target = review_rows.vote_target(con, review_id, task_id)
            if target is None:
                raise ReviewError(Problem.NOT_FOUND, f"review {review_id!r} has no task {task_id}")
            a_on_left, identical, expected = target
            if identical:
                raise ReviewError(Problem.CONFLICT, f"task {task_id}'s two answers are the same: it is not voted on")
            side = choice if choice not in SIDES else ("a" if SIDES[choice] == a_on_left else "b")
            if not review_rows.add_vote(con, review_id, task_id, reviewer, side, time.time()):
                raise ReviewError(Problem.CONFLICT, f"{reviewer!r} has already voted on task {task_id}")
            return expected, review_rows.progress(con, review_id, reviewer)

        expected, (done, total) = await self._write(run)
        return {"recorded": True, "expected": expected, "progress": {"done": done, "total": total}}

    # --- the database ------------------------------------------------------------------------
    async def _counts(self, review_id: str) -> ReviewCounts:
        found = await self._read(lambda cursor: review_rows.summaries(cursor, review_id))
        if not found:
            raise _unknown(review_id)
        return found[0]

    async def _read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        def run() -> T:
            with closing(self.writer.reader()) as cursor:
                return fn(cursor)

        try:
            return await asyncio.to_thread(run)
        except ReviewError:
            raise
        except Exception as exc:  # the database cannot be read now (reopening after an IO error, ...)
            raise ReviewError(Problem.UNAVAILABLE, f"telemetry database unavailable, retry later ({exc})") from exc

    async def _write(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        try:
            return await asyncio.wrap_future(self.writer.execute(fn))
        except ReviewError:
            raise
        except Exception as exc:  # rolled back: nothing of it was stored
            raise ReviewError(Problem.UNAVAILABLE, f"telemetry database unavailable, nothing stored; retry ({exc})") from exc


def _summary(counts: ReviewCounts) -> dict[str, Any]:
    r = counts.review
    return {"id": r.id, "name": r.name, "a": r.adapter_a, "b": r.adapter_b, "repo": r.repo, "since": r.since,
            "created_at": r.created_at, "status": r.status, "tasks": counts.tasks, "identical": counts.identical,
            "shown": counts.tasks - counts.identical, "voted_tasks": counts.voted_tasks, "votes": counts.votes,
            "url": f"/review/{r.id}"}


def _blind(task: TaskRow) -> dict[str, Any]:
    """What a reviewer sees of a task: nothing that says which answer is whose, nor `expected`."""
    left, right = (task.answer_a, task.answer_b) if task.a_on_left else (task.answer_b, task.answer_a)
    return {"task_id": task.task_id, "path": task.path, "language": task.language, "line": task.line,
            "before": "\n".join(task.prefix.split("\n")[-BEFORE_LINES:]),
            "after": "\n".join(task.suffix.split("\n")[:AFTER_LINES]),
            "left": left, "right": right}


def _task_rows(tasks: Sequence[ReviewTaskIn]) -> list[TaskRow]:
    rows = []
    for task_id, t in enumerate(tasks, 1):
        prefix, suffix, expected, answer_a, answer_b = (scrub(text)[0] for text in
                                                        (t.prefix, t.suffix, t.expected, t.answer_a, t.answer_b))
        rows.append(TaskRow(task_id=task_id, path=t.path, language=t.language, commit_sha=t.commit, line=t.line,
                            prefix=prefix, suffix=suffix, expected=expected, answer_a=answer_a, answer_b=answer_b,
                            a_on_left=secrets.randbelow(2) == 0, identical=answer_a.strip() == answer_b.strip()))
    return rows


def _unknown(review_id: str) -> ReviewError:
    return ReviewError(Problem.NOT_FOUND, f"no review {review_id!r}; GET /v1/reviews lists them")
