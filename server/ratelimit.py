"""Per-user rate limit on completions: a token bucket per user pseudonym (and, with auth off,
where the pseudonym is the client's choice, one per client address too: server/api/completions.py).

One person's editor (or a runaway script) must not take the engine from everybody else; the
bounded engine queue (max_queue) protects the server, this protects the other users. A
refused request gets 429 with Retry-After, which the language server takes as "no
suggestion now".
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict

# Buckets of users not seen for a while are dropped oldest-first past this many (a full bucket
# and a forgotten one behave the same), so made-up pseudonyms cannot grow memory without bound.
MAX_TRACKED_USERS = 10_000


class RateLimiter:
    def __init__(self, per_minute: int, burst: int, clock=time.monotonic):
        self.rate = per_minute / 60.0  # tokens per second
        self.burst = max(1, burst)
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # user -> (tokens, at)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, user: str) -> float:
        """Take one request for `user`: 0.0 if allowed, else the seconds until one is."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        tokens, at = self._buckets.pop(user, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[user] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[user] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) > MAX_TRACKED_USERS:
            self._buckets.popitem(last=False)
        return wait


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
