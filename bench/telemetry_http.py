"""Telemetry cost as the editor sees it: completion latency with telemetry on vs off, and
events/s through POST /v1/events. Both servers run at once and requests alternate between
them, so machine noise lands on both sides of the ratio.

    .venv/bin/python bench/telemetry_http.py [--requests 40] [--event-batches 40]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import start_server  # noqa: E402  (reuses the test harness)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40, help="completions per server")
    parser.add_argument("--event-batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()

    from codeloop.models import prepare_default_model

    model_dir = prepare_default_model(Path(os.environ.get("CODELOOP_TEST_MODELS_DIR", REPO / ".codeloop-test" / "models")))
    body = {"segments": {"prefix": "def parse_config(path):\n", "suffix": "", "language": "python"}, "max_tokens": 8, "user": "bench"}
    with tempfile.TemporaryDirectory() as tmp:
        on = start_server(model_dir, Path(tmp) / "on")
        off = start_server(model_dir, Path(tmp) / "off", env={"CODELOOP_TELEMETRY": "false"})
        try:
            latency = {"on": [], "off": []}
            ids = []
            with httpx.Client(timeout=120) as client:
                for server in (on, off):  # warm-up
                    client.post(server.url + "/v1/completions", json=body).raise_for_status()
                for _ in range(args.requests):
                    for label, server in (("on", on), ("off", off)):
                        t0 = time.monotonic()
                        r = client.post(server.url + "/v1/completions", json=body)
                        latency[label].append((time.monotonic() - t0) * 1000)
                        r.raise_for_status()
                        if label == "on":
                            ids.append(r.json()["id"])
                # Events: distinct (completion, kind, at) so every one is a new row.
                base = datetime.now(timezone.utc)
                batches = [[{"completion_id": ids[(b * args.batch_size + i) % len(ids)], "kind": "retained",
                             "retained_ratio": 1.0, "age_s": 30,
                             "at": (base + timedelta(microseconds=b * args.batch_size + i)).isoformat()}
                            for i in range(args.batch_size)] for b in range(args.event_batches)]
                t0 = time.monotonic()
                stored = sum(client.post(on.url + "/v1/events", json={"events": batch}).json()["stored"] for batch in batches)
                events_s = time.monotonic() - t0
        finally:
            on.stop()
            off.stop()

    p50 = {k: statistics.median(v) for k, v in latency.items()}
    p99 = {k: percentile(v, 0.99) for k, v in latency.items()}
    print(f"{args.requests} completions per server (8 new tokens), alternating; {os.cpu_count()} cores")
    print(f"{'figure':44} {'telemetry on':>14} {'off':>10} {'on/off':>8}")
    print(f"{'completion latency p50 (ms)':44} {p50['on']:14.1f} {p50['off']:10.1f} {p50['on'] / p50['off']:8.3f}   (target <= 1.02)")
    print(f"{'completion latency p99 (ms)':44} {p99['on']:14.1f} {p99['off']:10.1f} {p99['on'] / p99['off']:8.3f}")
    total = args.event_batches * args.batch_size
    print(f"{'events through POST /v1/events':44} {total} in {events_s:.2f} s = {total / events_s:,.0f} events/s "
          f"(batches of {args.batch_size}, acknowledged after commit; {stored} stored)")


if __name__ == "__main__":
    main()
