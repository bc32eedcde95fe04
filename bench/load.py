"""Load: 50 simulated editors against one embedded-engine server for 60 s, telemetry on and
then off. Figures and ratios come from one run.

    .venv/bin/python bench/load.py [--editors 50] [--seconds 60] [--no-off] [--json] [--max-queue 16]
                                   [--engine transformers|llama-cpp] [--threads N]

Each run starts a real `codeloop serve` on the real default model in a temp data dir on a free
port. The editors (asyncio + httpx, one client and one user pseudonym each, as one language
server per person) type a real file of this repository back one keystroke at a time, 30-150 ms
apart, with a 2-8 s pause after each Enter (as bench/lsp_typist.py). They behave like
`codeloop lsp` (lsp/completion.py): a keystroke supersedes the pending request (closing its HTTP
request, which cancels the generation), requests wait out a 150 ms debounce, carry its latency
and line budgets (2000 and 150 ms: a block ends with the line done after 150 ms), give up after 8 s,
and typing the shown suggestion's next characters keeps it (no request). When a suggestion is
shown, at the next keystroke the typist accepts it (Tab) if it is exactly what comes next in the
file, takes the matching words (partial) if it starts right, else accepts it anyway (15 %),
dismisses it (Escape, 10 %) or types over it (rejected). Accepted text still there 30 s later is
reported as `retained`. Events (shown/accepted/partial/rejected/dismissed/retained, each with
`at`, so a retry is idempotent) are batched and sent every second to POST /v1/events; a 429 or
503 is retried after its Retry-After, and a 429 on completions keeps the editor quiet until then.

At the end the editors stop, send every event still pending (retrying until acknowledged), the
server is stopped (SIGTERM flushes; it owns the DuckDB file while running) and the events table
is read: every acknowledged event must be there exactly once, and nothing else.

The same editors (same seed) then run against a server with CODELOOP_TELEMETRY=false, where
POST /v1/events answers 409: only requests are compared. Exit 1 if any 5xx was seen, or the
events written differ from those acknowledged.

--max-queue (default 16): 50 editors have at most 50 requests waiting, so with the server's
default of 64 its queue never fills; 16 makes the 429 + Retry-After path part of the load.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.load_editor import Editor, Stats, pick_sources  # noqa: E402
from tests.conftest import metric, start_server  # noqa: E402  (reuses the test harness)

FINAL_FLUSH_S = 120.0  # after the run: how long editors keep retrying their pending events


# --- one run ---------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """None when nothing was measured (JSON has no NaN)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


async def drive(url: str, files: list[Path], args, telemetry: bool) -> Stats:
    stats = Stats()
    editors = [Editor(i, url, files, args.seed, stats, telemetry) for i in range(args.editors)]
    deadline = time.monotonic() + args.seconds
    await asyncio.gather(*(e.run(deadline) for e in editors))
    until = time.monotonic() + FINAL_FLUSH_S
    await asyncio.gather(*(e.final_flush(until) for e in editors))
    return stats


def count_rows(db: Path, acked: set) -> dict:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        written = con.execute("SELECT completion_id, kind, count(*) FROM events GROUP BY ALL").fetchall()
        completions = con.execute("SELECT count(*) FROM completions").fetchone()[0] - 1  # less the warm-up
    keys = {(c, k) for c, k, _ in written}
    return {"events_written": sum(n for _, _, n in written), "duplicates": sum(n - 1 for _, _, n in written),
            "acked_missing": len(acked - keys), "written_not_acked": len(keys - acked), "completions_written": completions}


def run_once(model_dir: Path, files: list[Path], args, telemetry: bool) -> dict:
    env = {"CODELOOP_MAX_QUEUE": str(args.max_queue), "CODELOOP_ENGINE": args.engine}
    if args.threads is not None:
        env["CODELOOP_TORCH_THREADS"] = str(args.threads)
    if not telemetry:
        env["CODELOOP_TELEMETRY"] = "false"
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="codeloop-load-") as tmp:
        data_dir = Path(tmp) / "data"
        server = start_server(model_dir, data_dir, env=env)
        try:
            httpx.post(server.url + "/v1/completions", timeout=120, json={  # warm-up, not counted
                "segments": {"prefix": "def main():\n", "suffix": ""}, "max_tokens": 4}).raise_for_status()
            cpu0 = _cpu_seconds(server.proc.pid)
            started = time.monotonic()
            stats = asyncio.run(drive(server.url, files, args, telemetry))
            wall = time.monotonic() - started
            cpu = _cpu_seconds(server.proc.pid) - cpu0
            engine = server_counts(server.url)
        finally:
            code = server.stop(timeout=120)
        rows = count_rows(data_dir / "telemetry.duckdb", stats.acked) if telemetry else {}
    lat = stats.latency_ms
    out = {
        "telemetry": telemetry, "engine": args.engine, "editors": args.editors, "seconds": args.seconds, "wall_s": round(wall, 1),
        "max_queue": args.max_queue, "server_exit_code": code, "server_cpu_s": round(cpu, 1),
        "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2),
        "keystrokes": stats.keystrokes, "requests_sent": stats.sent, "served": stats.served, "served_empty": stats.empty,
        "served_per_s": round(stats.served / args.seconds, 2),
        # The issue-19 figure: of the requests whose editor waited for the answer (not
        # superseded by a keystroke), the share answered in time.
        "served_of_waited": round(stats.served / waited, 3) if (waited := stats.sent - stats.cancelled) else None, "http_429": stats.too_many, "http_5xx": stats.server_errors,
        "other_4xx": stats.other_4xx, "cancelled_in_flight": stats.cancelled, "debounced": stats.debounced,
        "not_sent_retry_after": stats.backing_off, "timeouts": stats.timeouts, "connection_errors": stats.conn_errors,
        "latency_p50_ms": percentile(lat, 0.5), "latency_p99_ms": percentile(lat, 0.99),
        "latency_max_ms": percentile(lat, 1.0), "queue_p50_ms": percentile(stats.queue_ms, 0.5),
        "outcomes": dict(sorted(stats.outcomes.items())), "event_posts": stats.event_posts, "events_sent": stats.events_sent,
        "events_acknowledged": len(stats.acked), "events_unacknowledged_at_end": stats.unacked_at_end,
        "event_posts_429": stats.event_429, "event_posts_503": stats.event_503,
        "events_refused": stats.event_refused, "events_refused_by_status": stats.event_refusal_codes, **engine, **rows,
    }
    return out


def server_counts(url: str) -> dict:
    """What the engine did, from /metrics (the warm-up request is taken off)."""
    finished = sum(metric(url, "codeloop_completions_total", finish_reason=r) for r in ("stop", "length")) - 1
    return {"generations_finished": int(finished),
            "generations_cancelled_running": int(metric(url, "codeloop_tokens_after_cancel_count")),
            "generations_cancelled_queued": int(metric(url, "codeloop_completions_total", finish_reason="cancelled")
                                                - metric(url, "codeloop_tokens_after_cancel_count")),
            "rate_limited_per_user": int(metric(url, "codeloop_rate_limited_total"))}


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (Linux /proc), children included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


# --- report ----------------------------------------------------------------------------------
def failures(runs: list[dict]) -> list[str]:
    problems = []
    for r in runs:
        label = "telemetry on" if r["telemetry"] else "telemetry off"
        if r["http_5xx"]:
            problems.append(f"{label}: {r['http_5xx']} answers were 5xx")
        if r["telemetry"]:
            if r["events_written"] != r["events_acknowledged"] or r["acked_missing"] or r["written_not_acked"] or r["duplicates"]:
                problems.append(f"{label}: events written {r['events_written']} != acknowledged {r['events_acknowledged']} "
                                f"(missing {r['acked_missing']}, not acknowledged {r['written_not_acked']}, duplicates {r['duplicates']})")
            if r["events_unacknowledged_at_end"] or r["events_refused"]:
                problems.append(f"{label}: {r['events_unacknowledged_at_end']} events never acknowledged, {r['events_refused']} refused "
                                f"{r['events_refused_by_status']}")
        elif r["events_sent"] and set(r["events_refused_by_status"]) != {409}:
            problems.append(f"{label}: events were answered {r['events_refused_by_status']}, expected 409 only")
    return problems


RATIO_KEYS = ("requests_sent", "served", "served_per_s", "http_429", "cancelled_in_flight", "timeouts",
              "latency_p50_ms", "latency_p99_ms", "queue_p50_ms", "server_cpu_s", "served_of_waited")


def ratios(on: dict, off: dict) -> dict:
    return {k: round(on[k] / off[k], 3) if on[k] is not None and off[k] else None for k in RATIO_KEYS}


def print_table(runs: list[dict], ratio: dict | None) -> None:
    on = runs[0]
    print(f"{on['editors']} editors x {on['seconds']} s; engine {on['engine']}; max_queue {on['max_queue']}; "
          f"{os.cpu_count()} cores, shared machine "
          f"(load average before/after: " + ", ".join(f"{r['load_avg_before']}/{r['load_avg_after']}" for r in runs) + ")")
    cols = ["telemetry on"] + (["off", "on/off"] if len(runs) > 1 else [])
    print(f"{'figure':36}" + "".join(f"{c:>14}" for c in cols))
    keys = ("keystrokes", "requests_sent", "served", "served_empty", "served_per_s", "served_of_waited", "http_429", "http_5xx", "other_4xx",
            "cancelled_in_flight", "debounced", "not_sent_retry_after", "timeouts", "connection_errors",
            "generations_finished", "generations_cancelled_running", "generations_cancelled_queued", "rate_limited_per_user",
            "latency_p50_ms", "latency_p99_ms", "latency_max_ms", "queue_p50_ms", "server_cpu_s", "event_posts")
    for k in keys:
        cells = [runs[0][k]] + ([runs[1][k], ratio.get(k, "")] if len(runs) > 1 else [])
        print(f"{k:36}" + "".join(f"{'' if c is None else c:>14}" for c in cells))
    print(f"{'outcomes (on)':36} {on['outcomes']}")
    print(f"{'events sent / acknowledged (on)':36} {on['events_sent']} / {on['events_acknowledged']}"
          f"  (posts answered 429: {on['event_posts_429']}, 503: {on['event_posts_503']})")
    print(f"{'events written (DuckDB, after stop)':36} {on['events_written']}  (acknowledged but missing {on['acked_missing']}, "
          f"written but not acknowledged {on['written_not_acked']}, duplicates {on['duplicates']})")
    print(f"{'completions written / served (on)':36} {on['completions_written']} / {on['served']}  "
          f"(a generation the editor cancelled just as it finished is written too)")
    if len(runs) > 1:
        print(f"{'events refused (off)':36} {runs[1]['events_refused']} {runs[1]['events_refused_by_status']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--editors", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--no-off", action="store_true", help="skip the telemetry-off run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--max-queue", type=int, default=16, help="the server's max_queue (its default is 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", default="transformers", choices=("transformers", "llama-cpp"),
                        help="the server's engine (llama-cpp serves the Q8_0 GGUF written next to the model folder)")
    parser.add_argument("--threads", type=int, default=None, help="the engine's threads (CODELOOP_TORCH_THREADS; default: the server's)")
    args = parser.parse_args()
    if args.editors < 1 or args.seconds <= 0 or args.max_queue < 1:
        parser.error("--editors and --max-queue must be at least 1, --seconds above 0")

    from codeloop.models import prepare_default_model

    model_dir = prepare_default_model(Path(os.environ.get("CODELOOP_TEST_MODELS_DIR", REPO / ".codeloop-test" / "models")))
    files = pick_sources()
    runs = [run_once(model_dir, files, args, telemetry=True)]
    if not args.no_off:
        runs.append(run_once(model_dir, files, args, telemetry=False))
    ratio = ratios(runs[0], runs[1]) if len(runs) > 1 else None
    problems = failures(runs)
    if args.json:
        print(json.dumps({"runs": runs, "on_off": ratio, "problems": problems}, indent=2))
    else:
        print_table(runs, ratio)
        print("\n" + ("\n".join(f"FAIL: {p}" for p in problems) if problems else "OK: no 5xx; every acknowledged event written once"))
        if not runs[0]["events_acknowledged"]:
            print("NOTE: no event was acknowledged (nothing was shown in time), so the events check had nothing to check")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
