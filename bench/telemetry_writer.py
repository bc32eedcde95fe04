"""Telemetry store figures: events/s through TelemetryWriter, and report times at 10M events.

    python bench/telemetry_writer.py [--events 500000] [--request-size 20] [--batch-max 20000]
                                     [--big-events 10000000]   (0: part 1 only)

1. Writer alone, fresh database: completions first (fire-and-forget), then `--events`
   events sent as the HTTP layer would (add_events calls of `--request-size`), timed until
   every future has resolved, i.e. every event is committed. Then the same events again
   (all duplicates: the idempotency path).
2. A database with ~`--big-events` synthetic events (generated in SQL, ~2.6 per completion,
   90 days), where each report is timed (best of 3).
3. The writer's rate again, on top of that database.
Targets: >= 50,000 events/s; each report under 1 s.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from feedback import queries  # noqa: E402
from feedback.db import open_db  # noqa: E402
from feedback.export import export_parquet  # noqa: E402
from feedback.outcomes import rebuild_outcomes  # noqa: E402
from feedback.writer import TelemetryWriter  # noqa: E402


def synthetic_requests(n_events: int, request_size: int, start: datetime, tag: str) -> tuple[list[dict], list[list[dict]]]:
    """~2.6 events per completion (shown, an outcome, some retained), like real traffic."""
    completions, events = [], []
    i = 0
    while len(events) < n_events:
        cid = f"cmpl-{tag}-{i:010d}"
        created = start + timedelta(milliseconds=10 * i)
        completions.append({"id": cid, "created_at": created, "user_id": f"u{i % 50}", "adapter": "team-py@1",
                            "language": "python", "text_chars": 40, "total_ms": 80.0})  # fmt: skip
        events.append({"completion_id": cid, "kind": "shown", "at": created + timedelta(milliseconds=50)})
        accepted = i % 4 == 0
        events.append({"completion_id": cid, "kind": "accepted" if accepted else "rejected",
                       "at": created + timedelta(seconds=2)})  # fmt: skip
        if accepted:
            for age in (30.0, 120.0, 600.0):
                events.append({"completion_id": cid, "kind": "retained", "at": created + timedelta(seconds=age),
                               "age_s": age, "retained_ratio": 0.8})  # fmt: skip
        i += 1
    events = events[:n_events]
    return completions, [events[k : k + request_size] for k in range(0, len(events), request_size)]


def through_writer(db: Path, n_events: int, request_size: int, start: datetime, tag: str, batch_max: int) -> None:
    completions, requests = synthetic_requests(n_events, request_size, start, tag)
    with TelemetryWriter(db, batch_max=batch_max) as writer:
        t0 = time.perf_counter()
        for row in completions:
            writer.add_completion(row)
        writer.flush()
        t_completions = time.perf_counter() - t0
        for label in ("new", "duplicates"):
            t0 = time.perf_counter()
            futures = [writer.add_events(rows) for rows in requests]
            stored = sum(f.result() for f in futures)
            elapsed = time.perf_counter() - t0
            print(f"  events ({label}): {n_events:,} in {len(requests):,} add_events calls -> {stored:,} stored, "
                  f"{elapsed:.2f} s = {n_events / elapsed:,.0f} events/s")  # fmt: skip
        print(f"  completions: {len(completions):,} in {t_completions:.2f} s = "
              f"{len(completions) / t_completions:,.0f}/s (fire-and-forget, then flush)")  # fmt: skip


def generate(db: Path, n_events: int) -> tuple[int, int]:
    """~n_events events over 90 days, ~2.6 per completion, appended in received_at order;
    the last 30 days run experiment 'exp-1' (arms by user)."""
    n_completions = int(n_events / 2.61)
    con = open_db(db)
    con.execute(
        f"""
        INSERT INTO completions (id, created_at, user_id, client, repo, filepath, language, adapter,
            experiment, arm, text_chars, prefix_chars, suffix_chars, prompt_tokens, completion_tokens,
            queue_ms, engine_ms, total_ms, first_token_ms, finish_reason)
        SELECT 'cmpl-' || md5(i::VARCHAR)[:24],
            TIMESTAMP '2026-01-01' + to_microseconds(CAST(i * (90 * 86400e6 / {n_completions}) AS BIGINT)) AS t,
            'u' || (hash(i) % 300),
            ['vscode', 'neovim', 'jetbrains'][CAST(hash(i * 7) % 3 AS INTEGER) + 1], 'repo', 'src/x.py',
            ['python', 'typescript', 'go', 'rust', 'java'][CAST(hash(i * 11) % 5 AS INTEGER) + 1],
            ['base', 'team-py@1', 'team-py@2'][CAST(hash(i * 13) % 3 AS INTEGER) + 1],
            CASE WHEN t >= TIMESTAMP '2026-03-02' THEN 'exp-1' END,
            CASE WHEN t >= TIMESTAMP '2026-03-02' THEN ['control', 'candidate'][CAST(hash(hash(i) % 300) % 2 AS INTEGER) + 1] END,
            1 + hash(i * 17) % 200, 2000, 300, 700, 30, 1.0, 60.0 + (hash(i * 19) % 1000) / 5.0,
            62.0 + (hash(i * 19) % 1000) / 5.0, 20.0, 'stop'
        FROM range({n_completions}) r(i)
        """
    )
    con.execute(
        """
        INSERT INTO events
        WITH f AS (
            SELECT id, created_at AS t, text_chars, hash(id) % 1000 < 900 AS shown,
                (hash(id) // 1000) % 1000 AS o, (hash(id) // 1000000) % 1000 AS r
            FROM completions
        ), e AS (
            SELECT id, 'shown' AS kind, t + INTERVAL 100 MILLISECOND AS "at", 100.0 AS elapsed_ms,
                NULL::INTEGER AS accepted_chars, NULL::DOUBLE AS retained_ratio, NULL::DOUBLE AS age_s
            FROM f WHERE shown
            UNION ALL
            SELECT id, CASE WHEN o < 250 THEN 'accepted' WHEN o < 300 THEN 'partial'
                            WHEN o < 900 THEN 'rejected' ELSE 'dismissed' END,
                t + INTERVAL 2 SECOND, 2000.0, CASE WHEN o >= 250 AND o < 300 THEN least(5, text_chars) END, NULL, NULL
            FROM f WHERE shown
            UNION ALL
            SELECT id, 'retained', t + to_microseconds(CAST(age * 1e6 AS BIGINT)), NULL, NULL, r / 1000.0, age
            FROM f, (VALUES (30.0), (120.0), (600.0)) a(age) WHERE shown AND o < 300
        )
        SELECT id, kind, "at", elapsed_ms, accepted_chars, retained_ratio, age_s, "at" + INTERVAL 50 MILLISECOND AS received_at
        FROM e ORDER BY received_at
        """
    )
    # Inserted behind the writer's back, so the derived table is rebuilt, as after a repair.
    t0 = time.perf_counter()
    rebuild_outcomes(con)
    print(f"  rebuild_outcomes: {time.perf_counter() - t0:.1f} s")
    con.execute("CHECKPOINT")
    counts = con.execute("SELECT (SELECT count(*) FROM completions), (SELECT count(*) FROM events)").fetchall()[0]
    con.close()
    return counts


def best_of(fn: Callable[[], Any], n: int = 3) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--request-size", type=int, default=20)
    parser.add_argument("--big-events", type=int, default=10_000_000, help="0: skip parts 2 and 3")
    parser.add_argument("--batch-max", type=int, default=20_000, help="TelemetryWriter(batch_max=…)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"1. writer alone, fresh database, add_events of {args.request_size} events, batch_max={args.batch_max}:")
        through_writer(Path(tmp) / "fresh.duckdb", args.events, args.request_size, datetime(2026, 4, 1), "fresh", args.batch_max)

        if args.big_events <= 0:
            return
        big = Path(tmp) / "big.duckdb"
        t0 = time.perf_counter()
        n_completions, n_events = generate(big, args.big_events)
        size_mb = big.stat().st_size / 2**20
        print(f"2. {n_events:,} events / {n_completions:,} completions generated in {time.perf_counter() - t0:.1f} s "
              f"({size_mb:,.0f} MB file); best of 3:")  # fmt: skip
        con = open_db(big, read_only=True)
        since = datetime(2026, 3, 25)
        reports: list[tuple[str, Callable[[], Any]]] = [
            *[(f"acceptance(by={by!r})", lambda by=by: queries.acceptance(con, by)) for by in ("adapter", "language", "client", "day")],
            ("acceptance(by='day', since=last 7 days)", lambda: queries.acceptance(con, "day", since=since)),
            ("arm_counts('exp-1')  [1/3 of the data]", lambda: queries.arm_counts(con, "exp-1")),
            ("arm_counts_by_day('exp-1')", lambda: queries.arm_counts_by_day(con, "exp-1")),
            ("recent_completions(limit=20)", lambda: queries.recent_completions(con)),
            ("completion_lengths(50 ids)", lambda: queries.completion_lengths(con, ids)),
            ("export_parquet(since=last 7 days)", lambda: export_parquet(con, Path(tmp) / "x.parquet", since)),
        ]  # fmt: skip
        ids = [r[0] for r in con.execute("SELECT id FROM completions USING SAMPLE 50").fetchall()]
        for name, fn in reports:
            seconds, result = best_of(fn)
            size = len(result) if hasattr(result, "__len__") else result
            print(f"  {name:<44} {seconds * 1000:8.0f} ms  ({size} rows)  {'OK' if seconds < 1 else 'SLOW'}")
        con.close()
        print(f"3. writer on top of the {n_events:,}-event database:")
        through_writer(big, min(args.events, 200_000), args.request_size, datetime(2026, 4, 2), "big", args.batch_max)


if __name__ == "__main__":
    main()
