"""The blind-review tables: reviews, their tasks and the reviewers' votes (migration 0004).

The server's ReviewService (server/reviews.py) holds the logic; this module holds the SQL, so
that the schema has one owner (feedback/). In the server, writes run in the telemetry
writer's thread (TelemetryWriter.execute) and reads on its reader cursors: the writer's
connection is the only one that holds the file.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import datetime, timezone

import duckdb

CHOICES = ("a", "b", "tie", "skip")


@dataclass(frozen=True)
class ReviewRow:
    id: str
    name: str
    adapter_a: str
    adapter_b: str
    repo: str | None
    since: str | None
    created_at: float  # unix seconds
    status: str  # "open" | "closed"


@dataclass(frozen=True)
class TaskRow:
    """One held-out line and both answers, as stored."""

    task_id: int
    path: str
    language: str | None
    commit_sha: str | None
    line: int | None
    prefix: str
    suffix: str
    expected: str
    answer_a: str
    answer_b: str
    a_on_left: bool
    identical: bool


@dataclass(frozen=True)
class TaskAnswers:
    """What the report scores of a task: no prefix or suffix (they may be large)."""

    task_id: int
    path: str
    line: int | None
    language: str | None
    expected: str
    answer_a: str
    answer_b: str
    identical: bool


@dataclass(frozen=True)
class ReviewCounts:
    review: ReviewRow
    tasks: int
    identical: int
    voted_tasks: int  # tasks with at least one vote (a skip counts: someone looked at it)
    votes: int


def insert_review(con: duckdb.DuckDBPyConnection, review: ReviewRow, tasks: Sequence[TaskRow]) -> None:
    """The review and its tasks; in the caller's transaction."""
    con.execute("INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
        review.id, review.name, review.adapter_a, review.adapter_b, review.repo, review.since,
        _timestamp(review.created_at), review.status])
    con.executemany(
        "INSERT INTO review_tasks (review_id, task_id, path, language, commit_sha, line, prefix, suffix, expected, "
        "answer_a, answer_b, a_on_left, identical) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [[review.id, *astuple(t)] for t in tasks])


def set_status(con: duckdb.DuckDBPyConnection, review_id: str, status: str) -> None:
    con.execute("UPDATE reviews SET status = ? WHERE id = ?", [status, review_id])


def status_of(con: duckdb.DuckDBPyConnection, review_id: str) -> str | None:
    """The review's status; None for an unknown id."""
    row = con.execute("SELECT status FROM reviews WHERE id = ?", [review_id]).fetchone()
    return None if row is None else row[0]


_SUMMARY = """
SELECT r.id, r.name, r.adapter_a, r.adapter_b, r.repo, r.since, epoch(r.created_at), r.status,
       coalesce(t.tasks, 0), coalesce(t.identical, 0), coalesce(v.voted_tasks, 0), coalesce(v.votes, 0)
FROM reviews r
LEFT JOIN (SELECT review_id, count(*) AS tasks, count(*) FILTER (WHERE identical) AS identical
           FROM review_tasks GROUP BY review_id) t ON t.review_id = r.id
LEFT JOIN (SELECT review_id, count(DISTINCT task_id) AS voted_tasks, count(*) AS votes
           FROM review_votes GROUP BY review_id) v ON v.review_id = r.id
"""


def summaries(cursor: duckdb.DuckDBPyConnection, review_id: str | None = None) -> list[ReviewCounts]:
    """Every review (or the one with `review_id`) with its counts, newest first."""
    where, params = ("WHERE r.id = ?", [review_id]) if review_id is not None else ("", [])
    rows = cursor.execute(f"{_SUMMARY} {where} ORDER BY r.created_at DESC, r.id", params).fetchall()
    return [ReviewCounts(ReviewRow(*r[:8]), *r[8:]) for r in rows]


def next_task(cursor: duckdb.DuckDBPyConnection, review_id: str, reviewer: str) -> TaskRow | None:
    """The first shown task, in task order, that `reviewer` has not voted on."""
    row = cursor.execute(
        "SELECT task_id, path, language, commit_sha, line, prefix, suffix, expected, answer_a, answer_b, a_on_left, "
        "identical FROM review_tasks t WHERE review_id = ? AND NOT identical AND NOT EXISTS ("
        "  SELECT 1 FROM review_votes v WHERE v.review_id = t.review_id AND v.task_id = t.task_id AND v.reviewer = ?) "
        "ORDER BY task_id LIMIT 1", [review_id, reviewer]).fetchone()
    return None if row is None else TaskRow(*row)


def progress(cursor: duckdb.DuckDBPyConnection, review_id: str, reviewer: str) -> tuple[int, int]:
    """(tasks `reviewer` voted on or skipped, tasks shown)."""
    done, total = cursor.execute(
        "SELECT (SELECT count(*) FROM review_votes WHERE review_id = ? AND reviewer = ?), "
        "(SELECT count(*) FROM review_tasks WHERE review_id = ? AND NOT identical)",
        [review_id, reviewer, review_id]).fetchone()
    return int(done), int(total)


def vote_target(con: duckdb.DuckDBPyConnection, review_id: str, task_id: int) -> tuple[bool, bool, str] | None:
    """(a_on_left, identical, expected) of a task; None when the review has no such task."""
    row = con.execute("SELECT a_on_left, identical, expected FROM review_tasks WHERE review_id = ? AND task_id = ?",
                      [review_id, task_id]).fetchone()
    return None if row is None else (bool(row[0]), bool(row[1]), row[2])


def add_vote(con: duckdb.DuckDBPyConnection, review_id: str, task_id: int, reviewer: str, choice: str,
             voted_at: float) -> bool:
    """Record the vote; False (and nothing written) when this reviewer already voted on the task."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, not {choice!r}")
    inserted = con.execute("INSERT OR IGNORE INTO review_votes VALUES (?, ?, ?, ?, ?)",
                           [review_id, task_id, reviewer, choice, _timestamp(voted_at)]).fetchone()[0]
    return inserted == 1


def report_tasks(cursor: duckdb.DuckDBPyConnection, review_id: str) -> list[TaskAnswers]:
    rows = cursor.execute(
        "SELECT task_id, path, line, language, expected, answer_a, answer_b, identical FROM review_tasks "
        "WHERE review_id = ? ORDER BY task_id", [review_id]).fetchall()
    return [TaskAnswers(*r) for r in rows]


def vote_counts(cursor: duckdb.DuckDBPyConnection, review_id: str) -> dict[int, dict[str, int]]:
    """task_id -> {choice: votes}, for the tasks that have votes. Who voted stays in the table:
    the report needs only how many chose what."""
    counts: dict[int, dict[str, int]] = {}
    for task_id, choice, n in cursor.execute(
            "SELECT task_id, choice, count(*) FROM review_votes WHERE review_id = ? GROUP BY ALL", [review_id]).fetchall():
        counts.setdefault(task_id, dict.fromkeys(CHOICES, 0))[choice] = int(n)
    return counts


def delete_review(con: duckdb.DuckDBPyConnection, review_id: str) -> None:
    """Delete the review, its tasks (repository code and both answers) and its votes; in the
    caller's transaction."""
    con.execute("DELETE FROM review_votes WHERE review_id = ?", [review_id])
    con.execute("DELETE FROM review_tasks WHERE review_id = ?", [review_id])
    con.execute("DELETE FROM reviews WHERE id = ?", [review_id])


def drop_reviewer(con: duckdb.DuckDBPyConnection, reviewer: str) -> int:
    """Delete every vote `reviewer` cast (codeloop forget); how many."""
    return int(con.execute("DELETE FROM review_votes WHERE reviewer = ?", [reviewer]).fetchone()[0])


def _timestamp(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).replace(tzinfo=None)
