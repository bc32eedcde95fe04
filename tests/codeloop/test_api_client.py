"""The one client of codeloop's HTTP API (codeloop/api_client.py), against a real server: a
refusal carries the status and the server's own reason, an unreachable server says so; the
telemetry export comes from the server, else (none answers) from its file, never after a refusal."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import httpx
import pytest

from codeloop.api_client import ApiClient, ApiError, NoTelemetry, export_telemetry
from feedback.writer import TelemetryWriter
from tests.conftest import free_port, send_json
from tests.feedback.test_copies import USER, record


def test_answers_and_refusals(server):
    with ApiClient(server.url) as api:
        assert "adapters" in api.adapters() and api.reachable()
        assert isinstance(api.get("/v1/logs", limit=1, user=None)["rows"], list)  # None params are left out
        with pytest.raises(ApiError) as refused:
            api.unload("no-such-adapter@1")
    err = refused.value
    assert err.status == 404 and not err.unreachable and "no-such-adapter@1" in err.reason
    assert str(err).startswith("DELETE /v1/adapters/no-such-adapter@1 refused (404): ")
    with ApiClient(server.url) as api, pytest.raises(ApiError) as bad:
        api.post("/v1/completions", {"segments": {"prefix": 5}})
    assert bad.value.status == 422 and bad.value.reason


def test_an_unreachable_server_is_named():
    url = f"http://127.0.0.1:{free_port()}"
    with ApiClient(url) as api:
        assert not api.reachable()
        with pytest.raises(ApiError) as gone:
            api.adapters()
    err = gone.value
    assert err.unreachable and err.status is None and not err.timed_out
    assert url in str(err) and "codeloop serve" in str(err) and "--server" in str(err)


# -- export_telemetry: the server's export, else its file's; a refusal is not a fallback --------
def test_export_telemetry_takes_the_running_servers_export(server, tmp_path):
    made = httpx.post(server.url + "/v1/completions", timeout=120, json={
        "segments": {"prefix": "def export_me(a):\n    return", "suffix": "", "language": "python"}, "max_tokens": 6})
    made.raise_for_status()
    out = tmp_path / "export.parquet"
    deadline = time.monotonic() + 30
    with ApiClient(server.url) as api:  # the server holds its file: only its export can answer
        while True:  # the server's writer batches: the row is written within its flush interval
            done = export_telemetry(api, out, server.data_dir / "telemetry.duckdb")
            ids = {r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet('{out}')").fetchall()}
            if made.json()["id"] in ids or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert not done.read_directly and done.source == server.url and done.unreachable is None
    assert made.json()["id"] in ids


def test_export_telemetry_reads_the_file_when_no_server_answers(tmp_path):
    db, out = tmp_path / "telemetry.duckdb", tmp_path / "export.parquet"
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    with ApiClient(url) as api, pytest.raises(NoTelemetry) as none:
        export_telemetry(api, out, db)  # and there is no file either
    assert url in str(none.value) and str(db) in none.value.reason and not out.exists()

    with TelemetryWriter(db, flush_interval_s=0.0) as writer:
        record(writer, USER, 2)
    with ApiClient(url) as api:
        done = export_telemetry(api, out, db)
    assert done.read_directly and done.source == str(db) and done.rows == 2 and url in done.unreachable
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}')").fetchall()[0][0] == 2
    assert export_telemetry(None, tmp_path / "again.parquet", db).rows == 2  # no server to ask: the file


def test_export_telemetry_gives_a_refusal_and_reads_no_file(tmp_path):
    class Refuses(BaseHTTPRequestHandler):
        def do_GET(self):
            send_json(self, 403, {"error": "an admin token is needed"})

        def log_message(self, *args):
            pass

    db, out = tmp_path / "telemetry.duckdb", tmp_path / "export.parquet"
    with TelemetryWriter(db, flush_interval_s=0.0) as writer:
        record(writer, USER, 1)
    refusing = ThreadingHTTPServer(("127.0.0.1", 0), Refuses)
    threading.Thread(target=refusing.serve_forever, daemon=True).start()
    try:
        with ApiClient(f"http://127.0.0.1:{refusing.server_port}") as api, pytest.raises(ApiError) as refused:
            export_telemetry(api, out, db)
    finally:
        refusing.shutdown()
        refusing.server_close()
    assert refused.value.status == 403 and refused.value.reason == "an admin token is needed"
    assert not out.exists()  # no fallback to the file
