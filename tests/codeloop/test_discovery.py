"""Commands find the running server through data_dir/server.json (codeloop/discovery.py), and say
where they looked when none answers (real server, real CLI subprocesses)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from codeloop.discovery import SERVER_FILE, forget_server, locate_server, record_server
from tests.conftest import free_port


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CODELOOP_")}
    return subprocess.run([sys.executable, "-m", "codeloop.cli", *args], capture_output=True, text=True,
                          env={**base, **env}, timeout=120)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stats_finds_a_server_on_another_port(server):
    """The issue's case: the server is not on 8000 and holds the DuckDB file's lock; without
    --server the CLI used to read the locked file and fail."""
    recorded = json.loads((server.data_dir / SERVER_FILE).read_text())
    assert recorded == {"url": server.url, "pid": server.proc.pid}
    assert not server.url.endswith(":8000")
    done = cli("stats", "--json", env={"CODELOOP_DATA_DIR": str(server.data_dir),
                                       "CODELOOP_CONFIG": os.devnull})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["by"] == "adapter"


def test_a_dead_servers_record_is_ignored_and_the_error_says_where_it_looked(tmp_path):
    port = free_port()
    (tmp_path / SERVER_FILE).write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": dead_pid()}))
    done = cli("stats", env={"CODELOOP_DATA_DIR": str(tmp_path), "CODELOOP_PORT": str(port),
                             "CODELOOP_CONFIG": os.devnull})
    assert done.returncode == 2
    assert f"no codeloop server answers at http://127.0.0.1:{port}" in done.stderr
    assert f"no running server recorded in {tmp_path / SERVER_FILE}" in done.stderr
    assert "--server URL" in done.stderr and "codeloop serve" in done.stderr
    assert "Traceback" not in done.stderr


def test_experiment_report_names_the_url_it_tried(tmp_path):
    port = free_port()
    done = cli("experiment", "report", "x", "--server", f"http://127.0.0.1:{port}",
               env={"CODELOOP_DATA_DIR": str(tmp_path), "CODELOOP_CONFIG": os.devnull})
    assert done.returncode == 2
    assert f"no codeloop server answers at http://127.0.0.1:{port} (--server)" in done.stderr


def test_record_locate_forget(tmp_path):
    assert locate_server(tmp_path, "0.0.0.0", 8123).url == "http://127.0.0.1:8123"
    assert locate_server(tmp_path, "::1", 8123).url == "http://[::1]:8123"
    record_server(tmp_path, "http://127.0.0.1:9999")
    found = locate_server(tmp_path, "127.0.0.1", 8000)
    assert found.url == "http://127.0.0.1:9999" and str(os.getpid()) in found.source
    assert locate_server(tmp_path, "127.0.0.1", 8000, "http://elsewhere:1/").url == "http://elsewhere:1"
    assert (tmp_path / SERVER_FILE).stat().st_mode & 0o077 == 0
    forget_server(tmp_path)
    assert not (tmp_path / SERVER_FILE).exists()


def test_a_record_of_another_process_or_garbage_is_not_used(tmp_path):
    (tmp_path / SERVER_FILE).write_text(json.dumps({"url": "http://127.0.0.1:9999", "pid": 1}))
    forget_server(tmp_path)  # pid 1 wrote it, not us: it stays
    assert (tmp_path / SERVER_FILE).exists()
    for garbage in ("{", "[]", json.dumps({"url": "file:///etc/passwd", "pid": 1}), json.dumps({"url": "http://x", "pid": "1"})):
        (tmp_path / SERVER_FILE).write_text(garbage)
        assert locate_server(tmp_path, "127.0.0.1", 8000).url == "http://127.0.0.1:8000"


def test_what_the_server_writes_is_its_users_alone(server):
    """Folders 0700 and files 0600 under data_dir, whatever the umask of the shell."""
    written = [server.data_dir / name for name in ("telemetry.duckdb", "telemetry.duckdb.journal", "server.json", "adapters")]
    for path in written:
        assert path.exists(), path
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"


def test_an_export_the_cli_writes_is_its_users_alone(server):
    """The export (everyone's code) is 0600 too, also from a shell whose umask is 022."""
    out = server.data_dir / "export-mode.parquet"
    try:
        done = subprocess.run([sys.executable, "-m", "codeloop.cli", "export", str(out), "--server", server.url],
                              capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o022),
                              env={**os.environ, "CODELOOP_CONFIG": os.devnull})
        assert done.returncode == 0, done.stderr
        assert out.stat().st_mode & 0o777 == 0o600, oct(out.stat().st_mode)
    finally:
        out.unlink(missing_ok=True)
