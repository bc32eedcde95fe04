"""The server's one error for a request it will not serve, and the one place where what
went wrong becomes an HTTP status.

Routes raise `Refused(status, message, retry_after=...)` for what only HTTP knows (a body
that is not JSON, a rate limit, a database that is busy now). The parts behind them
(adapters, experiments, telemetry) raise `DomainError`s that say what went wrong
(`Problem.NOT_FOUND`, ...), not how HTTP spells it; `status_of` maps them. Every answer is
`{"error": message}`, with Retry-After where asking again later will work.
"""
from __future__ import annotations

from enum import Enum


class Problem(Enum):
    INVALID = "invalid"  # the request asks for something impossible
    NOT_FOUND = "not found"
    CONFLICT = "conflict"  # not in the present state (a name taken, an experiment stopped)
    FORBIDDEN = "forbidden"  # not this caller's to ask
    TOO_LARGE = "too large"
    UNAVAILABLE = "unavailable"  # a backend cannot be reached now


_STATUS = {Problem.INVALID: 422, Problem.NOT_FOUND: 404, Problem.CONFLICT: 409, Problem.FORBIDDEN: 403,
           Problem.TOO_LARGE: 413, Problem.UNAVAILABLE: 503}


class DomainError(Exception):
    """A request about the server's state cannot be honoured; `problem` says why."""

    def __init__(self, problem: Problem, message: str):
        super().__init__(message)
        self.problem = problem

    @property
    def status(self) -> int:
        return status_of(self.problem)


def status_of(problem: Problem) -> int:
    return _STATUS[problem]


class Refused(Exception):
    """The HTTP answer to a request that cannot be served as asked: `status`, the message,
    and `retry_after` (seconds) when asking again later will work."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
