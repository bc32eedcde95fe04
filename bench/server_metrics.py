"""What the server says about itself, for benches: /metrics samples, /healthz, /v1/logs rows,
a barrier request that waits until the engine's queue has drained, and a process's CPU time."""
from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import httpx

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def scrape(url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(url + "/metrics", timeout=30).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and (m := _SAMPLE.match(line)):
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def total(sample: dict, name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for (n, lab), v in sample.items() if n == name and all(w in lab for w in want))


def health(url: str) -> dict:
    return httpx.get(url + "/healthz", timeout=30).json()


def barrier(url: str, limit_s: float) -> dict | None:
    """A one-token completion through the engine's queue: when it returns, every generation
    queued before it has ended and been recorded (the engine runs one job at a time, in order).
    Returns what it adds to /metrics, to be subtracted; None when `limit_s` ran out."""
    deadline = time.monotonic() + limit_s
    body = {"segments": {"prefix": "def f():\n    return", "suffix": ""}, "max_tokens": 1, "postprocess": False,
            "user": "typist-barrier"}
    while time.monotonic() < deadline:
        try:
            r = httpx.post(url + "/v1/completions", json=body, timeout=max(1.0, deadline - time.monotonic()))
        except httpx.TimeoutException:
            return None
        if r.status_code == 200:
            data = r.json()
            reason = data["choices"][0]["finish_reason"]
            return {
                ("codeloop_completions_total", f'{{adapter="base",finish_reason="{reason}"}}'): 1.0,
                ("codeloop_completion_tokens_total", '{adapter="base"}'): float(data["usage"]["completion_tokens"]),
                # Its prompt is read afresh or reused; either way it is not the typist's.
                ("codeloop_prompt_tokens_total", ""): float(data["usage"]["prompt_tokens"]),
                ("codeloop_http_requests_total", '{route="/v1/completions",status="200"}'): 1.0,
                ("codeloop_engine_seconds_sum", '{adapter="base"}'): data["timings"]["engine_ms"] / 1000,
                ("codeloop_engine_seconds_count", '{adapter="base"}'): 1.0,
            }
        if r.status_code != 429:  # 429: the queue is full (of abandoned jobs, often); try again
            r.raise_for_status()
        time.sleep(0.5)
    return None


def log_rows(url: str, user: str) -> list[dict]:
    rows, offset = [], 0
    while True:
        page = httpx.get(url + "/v1/logs", params={"limit": 1000, "offset": offset, "user": user}, timeout=60).json()["rows"]
        rows += page
        if len(page) < 1000:
            return rows
        offset += 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan
