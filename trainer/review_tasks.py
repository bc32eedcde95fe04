"""Blind review: held-out lines answered by two adapters, for people to compare.

A review's tasks are cut as `codeloop eval` cuts its lines (trainer/heldout.py), and each
adapter answers through the running server as an editor's suggestion would come (the
server's template, budget, token healing, post-processing and its own stops: several lines
where the model writes several). The server stores the pairs, shuffles left and right per
task and serves them to reviewers (server/reviews.py); this module only builds and sends
them, and waits for the verdict when the trainer publishes with `--publish review`.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Sequence

from codeloop.api_client import ApiClient, ApiError
from trainer.heldout import HeldOutLine
from trainer.publish import ReviewDeleted
from trainer.repo_eval import ask

# What the page shows as "what the author wrote": the line and a few after it, enough to
# judge a suggestion of several lines. Those lines are hidden until the vote, so the code
# shown after the cursor starts below them.
EXPECTED_LINES = 5
# The file around the cursor as stored with a task: more than the page shows (30 lines
# before, 10 after), and small enough that 300 tasks fit in one request (max_request_bytes).
BEFORE_LINES, BEFORE_CHARS = 40, 3000
AFTER_LINES, AFTER_CHARS = 12, 1000


def expected_text(line: HeldOutLine, lines: int = EXPECTED_LINES) -> str:
    """The held-out line (after its indentation, as the answers start) and the lines after it
    (the suffix starts with the held-out line's own line break)."""
    after = line.suffix.split("\n")[1:lines]
    return "\n".join([line.expected, *after]).rstrip()


def shown_context(line: HeldOutLine, expected_lines: int = EXPECTED_LINES) -> tuple[str, str]:
    """(before, after) the cursor for the page: the last lines of the prefix, and the suffix
    from below the author's hidden lines (its first row, the rest of the cursor's line, kept)."""
    before = "\n".join(line.prefix.split("\n")[-BEFORE_LINES:])[-BEFORE_CHARS:]
    rows = line.suffix.split("\n")
    after = "\n".join([rows[0], *rows[expected_lines : expected_lines + AFTER_LINES]])[:AFTER_CHARS]
    return before, after


def answer_pairs(api: ApiClient, lines: Sequence[HeldOutLine], a: str, b: str, *, max_tokens: int = 64,
                 progress: bool = True) -> list[dict[str, Any]]:
    """One task per line, in the wire form of POST /v1/reviews: both adapters' answers."""
    from tqdm import tqdm

    tasks = []
    for line in tqdm(lines, desc=f"asking {a} and {b}", unit="task", file=sys.stderr, disable=not progress):
        answers = [ask(api, line, model, max_tokens, one_line=False) for model in (a, b)]
        before, after = shown_context(line)
        tasks.append({"path": line.path, "language": line.language, "commit": line.commit, "line": line.line,
                      "prefix": before, "suffix": after, "expected": expected_text(line),
                      "answer_a": answers[0], "answer_b": answers[1]})
    return tasks


def create_review(api: ApiClient, lines: Sequence[HeldOutLine], a: str, b: str, *, name: str | None = None,
                  repo: str | None = None, since: str | None = None, max_tokens: int = 64,
                  progress: bool = True) -> dict[str, Any]:
    """Ask both adapters, store the review on the server; its summary (id, url, counts)."""
    tasks = answer_pairs(api, lines, a, b, max_tokens=max_tokens, progress=progress)
    body = {"name": name or f"{b} vs {a}", "a": a, "b": b, "repo": repo, "since": since, "tasks": tasks}
    return api.post("/v1/reviews", body)


def wait_for_verdict(api: ApiClient, review_id: str, *, wait_s: float, poll_s: float = 30.0,
                     echo: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll the review's report until it can decide (enough decisive votes) and every shown
    task has a vote, or the review is closed, or `wait_s` passes; the last report."""
    deadline = time.monotonic() + wait_s
    said = None
    while True:
        try:
            rep = api.get(f"/v1/reviews/{review_id}")
        except ApiError as exc:
            if exc.status == 404:
                raise ReviewDeleted(f"blind review {review_id} was deleted before it decided") from None
            raise
        progress = f"{rep['voted_tasks']} of {rep['shown']} tasks voted, verdict {rep['verdict']}"
        if progress != said:
            echo(f"review {review_id}: {progress}")
            said = progress
        complete = rep["verdict"] != "too_few_votes" and rep["voted_tasks"] >= rep["shown"]
        if complete or rep["status"] == "closed" or time.monotonic() >= deadline:
            return rep
        sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
