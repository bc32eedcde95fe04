"""kill -9 of the server in the middle of traffic: every event it acknowledged (HTTP 200) is
in DuckDB after the restart, nothing twice, and the file opens cleanly.

Two clients: plain HTTP (completions and event batches streaming concurrently, killed while
requests are in flight), and the language server (events spooled and replayed by it).
"""
from __future__ import annotations

import asyncio
import signal
from collections import Counter

import httpx
from lsprotocol import types

from tests.conftest import start_server
from tests.faults.conftest import (
    check_database,
    complete,
    event_key,
    health,
    shown_events,
    stored_events,
)
from tests.lsp.conftest import insert, start_lsp, suggest_in_each, wait_stats

BATCH = 200  # events per POST: big enough that the kill lands inside commits
STREAMS = 2


class Traffic:
    """Concurrent completions and event batches; remembers what was sent and acknowledged."""

    def __init__(self, client: httpx.AsyncClient, ids: list[str], round_: int) -> None:
        self.client, self.ids, self.round = client, ids, round_
        self.sent: list[list[dict]] = []
        self.acked: list[list[dict]] = []
        self.completions_made = 0

    async def events(self, stream: int) -> None:
        n = 0
        while True:
            # Newest ids too: an event may arrive while its completion is still queued.
            batch = shown_events(self.ids[-8:], start=(self.round * 100 + stream) * 10**9 + n * BATCH, n=BATCH)
            n += 1
            self.sent.append(batch)
            try:
                r = await self.client.post("/v1/events", json=batch, timeout=120)
            except httpx.TransportError:
                return  # the server died under us: this batch is unacknowledged
            assert r.status_code == 200, r.text
            assert r.json()["stored"] == BATCH, r.text
            self.acked.append(batch)

    async def completions(self) -> None:
        while True:
            try:
                r = await self.client.post("/v1/completions", timeout=300, json={
                    "segments": {"prefix": f"def g{self.completions_made}(y):\n    return ", "suffix": "",
                                 "language": "python"}, "max_tokens": 4})
            except httpx.TransportError:
                return
            assert r.status_code == 200, r.text
            self.ids.append(r.json()["id"])
            self.completions_made += 1

    def acked_events(self) -> int:
        return sum(len(b) for b in self.acked)


async def test_kill_9_while_completions_and_events_stream(model_dir, tmp_path):
    data = tmp_path / "data"
    db = data / "telemetry.duckdb"
    server = start_server(model_dir, data)
    port = int(server.url.rsplit(":", 1)[1])
    acked: list[dict] = []
    unacked: list[list[dict]] = []
    try:
        with httpx.Client(base_url=server.url) as seed:
            ids = [complete(seed, i).json()["id"] for i in range(4)]
        for round_ in range(2):  # killed twice: the second time on a database replayed once already
            async with httpx.AsyncClient(base_url=server.url) as client:
                traffic = Traffic(client, ids, round_)
                tasks = [asyncio.create_task(traffic.events(s)) for s in range(STREAMS)]
                tasks.append(asyncio.create_task(traffic.completions()))
                while traffic.acked_events() < 6 * BATCH or traffic.completions_made < 1:
                    await asyncio.sleep(0.05)
                    for t in tasks:
                        if t.done():
                            t.result()  # a failed assertion in a stream fails the test now
                server.stop(signal.SIGKILL)  # requests are in flight on every stream
                assert server.proc.returncode == -signal.SIGKILL
                await asyncio.wait_for(asyncio.gather(*tasks), 120)
            acked += [e for b in traffic.acked for e in b]
            unacked += [b for b in traffic.sent if b not in traffic.acked]
            assert unacked, "no request was in flight when the server was killed"

            server = start_server(model_dir, data, port=port)  # the database must open cleanly
            status = health(server.url)
            assert status["status"] == "ok" and status["telemetry"]["healthy"], status

        with httpx.Client(base_url=server.url) as client:
            # A client re-sends what it never saw acknowledged, and (not knowing) some it did.
            for batch in unacked:
                r = client.post("/v1/events", json=batch, timeout=120)
                # Also for completions served but not yet committed at the kill: the journal
                # brought their rows back at the restart (feedback/journal.py).
                assert r.status_code == 200, r.text
                acked += batch
            r = client.post("/v1/events", json=acked[-1000:], timeout=120)
            assert r.status_code == 200 and r.json()["stored"] == 0, r.text
    finally:
        server.stop()

    rows = stored_events(db)
    counts = Counter(rows)
    assert [k for k, n in counts.items() if n > 1] == []  # nothing twice
    missing = {event_key(e) for e in acked} - set(counts)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
    checked = check_database(db)
    assert checked["orphan_events"] == 0 and checked["outcome_rows_missing"] == 0, checked
    assert checked["events"] == len(rows) >= len(acked)


# --- the language server's spool --------------------------------------------------------
RETENTION = {"retentionSeconds": [0.5, 1.0, 1.5]}
DOCS = ["def add(a, b):\n    return", "def square(x):\n    return", "def is_even(n):\n    return",
        "def neg(v):\n    return"]


async def test_kill_9_of_the_server_while_the_language_server_sends_events(model_dir, tmp_path):
    """Accepts, and the retention checks after them, produce events in a burst; the server
    is killed -9 while they are being posted and restarted on the same port. The language
    server keeps them in its spool and replays them: each arrives exactly once."""
    server = start_server(model_dir, tmp_path / "server")
    port = int(server.url.rsplit(":", 1)[1])
    lsp = await start_lsp(server.url, tmp_path / "lsp", {**RETENTION, "eventFlushMs": 0})
    try:
        items = await suggest_in_each(lsp, DOCS, "faults", timeout=90)  # and their shown events committed

        for uri, line, ch, item in items:  # accepted now, retained at 0.5, 1 and 1.5 s
            insert(lsp, uri, 2, line, ch, item.insert_text)
            assert await lsp.workspace_execute_command_async(types.ExecuteCommandParams("codeloop.accept", item.command.arguments))
        # Kill as soon as the first accepted events were acknowledged: the rest are on the wire
        # or in the spool, the retention checks still to come.
        before = (await wait_stats(lsp, lambda s: s.events_sent > len(DOCS), timeout=60)).events_sent
        server.stop(signal.SIGKILL)
        assert server.proc.returncode == -signal.SIGKILL
        expected = len(DOCS) * (2 + len(RETENTION["retentionSeconds"]))  # shown, accepted, retained ×3
        await wait_stats(lsp, lambda s: s.events_sent + s.events_unsent >= expected and s.events_unsent > 0, timeout=90)

        server = start_server(model_dir, tmp_path / "server", port=port)
        done = await wait_stats(lsp, lambda s: s.events_unsent == 0 and s.events_sent >= expected, timeout=120)
        assert done.events_refused == 0 and done.events_dropped == 0, done
        assert before < expected  # the kill did land mid-stream
    finally:
        await lsp.shutdown_session()
        await lsp.stop()
        server.stop()

    ids = [item.command.arguments[0] for *_, item in items]
    db = tmp_path / "server" / "telemetry.duckdb"
    rows = stored_events(db)
    counts = Counter(rows)
    assert [k for k, n in counts.items() if n > 1] == []
    by_kind = Counter((cid, kind) for cid, kind, _ in rows if cid in ids)
    for cid in ids:
        assert (by_kind[(cid, "shown")], by_kind[(cid, "accepted")], by_kind[(cid, "retained")]) == (1, 1, 3), by_kind
    checked = check_database(db)
    assert checked["orphan_events"] == 0 and checked["outcome_rows_missing"] == 0, checked
