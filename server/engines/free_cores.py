"""How many cores the other processes on this machine leave free, measured between requests.

Why: llama.cpp's threads wait for one another after every operation, so one thread that
shares its core with another busy process holds all of them up. With a training run on the
same 2-core machine (a nightly refresh), the llama-cpp engine decoded 1.8 tokens/s with 2
threads and 6.3 with 1 (bench/lsp_typist.py, docs/benchmarks.md). So with `torch_threads = 0`
the engine runs on the cores the rest of the machine left free since its last request.
"""
from __future__ import annotations

import os
import time

# A shorter window says little (a scheduler tick is 10 ms): keep the previous choice.
MIN_WINDOW_S = 0.2


def threads_for(free_cores: float, max_threads: int) -> int:
    """Threads to run with when `free_cores` cores are free: at least 1, at most max_threads."""
    return max(1, min(max_threads, int(free_cores + 0.5)))


class FreeCores:
    """Free cores since the previous reading: all cores, less what the machine's other
    processes used (the machine's busy time from /proc/stat, less this process's own)."""

    def __init__(self, cores: int | None = None):
        self.cores = cores or os.cpu_count() or 1
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._read()

    def free(self) -> float | None:
        """Cores free since the last call; None where it cannot be measured (no /proc, or too
        short a window)."""
        now = self._read()
        if now is None or self._last is None:
            self._last = now
            return None
        wall = now[0] - self._last[0]
        if wall < MIN_WINDOW_S:
            return None
        busy = (now[1] - self._last[1]) / self._tick
        own = now[2] - self._last[2]
        self._last = now
        others = max(0.0, busy - own) / wall
        return max(0.0, self.cores - others)

    def _read(self) -> tuple[float, int, float] | None:
        try:
            with open("/proc/stat") as fh:
                fields = [int(x) for x in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        # Guest time is already counted in user time (fields 8 and 9).
        busy = sum(fields[:8]) - idle
        times = os.times()
        return time.monotonic(), busy, times.user + times.system
