"""No event is lost while the server is down, nor when the language server is killed:
events made during an outage are spooled, and delivered exactly once when it comes back."""
import signal

import duckdb
from lsprotocol import types

from tests.conftest import start_server
from tests.lsp.conftest import insert, start_lsp, suggest_in_each, wait_stats

RETENTION = {"retentionSeconds": [0.5, 1.0]}
DOCS = ["def add(a, b):\n    return", "def square(x):\n    return", "def is_even(n):\n    return"]


async def test_events_made_during_an_outage_and_a_kill_arrive_exactly_once(model_dir, tmp_path):
    server = start_server(model_dir, tmp_path / "server")
    port = int(server.url.rsplit(":", 1)[1])
    lsp_data = tmp_path / "lsp"
    first = await start_lsp(server.url, lsp_data, RETENTION)
    try:
        items = await suggest_in_each(first, DOCS, "outage")  # and their shown events delivered

        server.stop()  # the outage
        for uri, line, ch, item in items:
            insert(first, uri, 2, line, ch, item.insert_text)
            assert await first.workspace_execute_command_async(types.ExecuteCommandParams("codeloop.accept", item.command.arguments))
        made_while_down = 3 * len(DOCS)  # accepted, retained at 0.5 s and at 1 s, for each
        await wait_stats(first, lambda s: s.events_unsent == made_while_down)
    finally:
        first._server.send_signal(signal.SIGKILL)  # the language server dies too, spool and all
        await first._server.wait()
    # Forget that the shown events were delivered: the replay sends them again, and the server
    # must still store each event once.
    for mark in lsp_data.glob("spool/*.sent"):
        mark.unlink()

    server = start_server(model_dir, tmp_path / "server", port=port)
    second = await start_lsp(server.url, lsp_data, RETENTION)
    try:
        done = await wait_stats(second, lambda s: s.events_unsent == 0 and s.events_sent >= made_while_down + len(DOCS))
        assert done.events_refused == 0
    finally:
        await second.shutdown_session()
        await second.stop()
        server.stop()

    ids = [item.command.arguments[0] for *_, item in items]
    con = duckdb.connect(str(tmp_path / "server" / "telemetry.duckdb"), read_only=True)
    rows = con.execute(
        'SELECT completion_id, kind, count(*) FROM events WHERE completion_id IN (SELECT unnest(?)) GROUP BY ALL', [ids]
    ).fetchall()
    duplicates = con.execute('SELECT count(*) - count(DISTINCT (completion_id, kind, "at")) FROM events').fetchall()[0][0]
    con.close()
    counts = {(cid, kind): n for cid, kind, n in rows}
    assert duplicates == 0
    for cid in ids:
        assert counts == counts | {(cid, "shown"): 1, (cid, "accepted"): 1, (cid, "retained"): 2}
    assert len(counts) == 3 * len(ids) and sum(counts.values()) == made_while_down + len(DOCS)
