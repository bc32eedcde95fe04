"""Where the running server listens, so that `codeloop stats` finds a server on port 8123.

`codeloop serve` writes ``data_dir/server.json`` (its URL and pid) before it starts listening
and removes it when it exits; a file left by a killed server is ignored because its pid is
gone. Every command that talks to a server asks :func:`locate_server`, which says where the
URL came from, so that a command that cannot reach it can say where it looked.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

SERVER_FILE = "server.json"

__all__ = ["SERVER_FILE", "ServerLocation", "forget_server", "locate_server", "record_server", "url_for"]


@dataclass(frozen=True)
class ServerLocation:
    url: str
    source: str  # where the URL came from, in words ("--server", "data_dir/server.json (pid 12)", ...)

    def unreachable(self) -> str:
        """The message for a command that found no server there."""
        return (f"no codeloop server answers at {self.url} ({self.source}); start one with `codeloop serve`, "
                "or pass --server URL")


def url_for(host: str, port: int) -> str:
    """A URL a client on this machine can use for a server bound to host:port."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{port}"


def record_server(data_dir: Path, url: str) -> Path:
    """Write data_dir/server.json for this process (atomically: readers never see half a file)."""
    path = data_dir / SERVER_FILE
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def forget_server(data_dir: Path) -> None:
    """Remove data_dir/server.json if this process wrote it (another server may have since)."""
    path = data_dir / SERVER_FILE
    recorded = _read(path)
    if recorded is not None and recorded[1] == os.getpid():
        path.unlink(missing_ok=True)


def locate_server(data_dir: Path, host: str, port: int, override: str | None = None,
                  override_source: str = "--server") -> ServerLocation:
    """The server to talk to: the one named (``override``), else the one recorded in data_dir,
    else host:port from the settings."""
    if override:
        return ServerLocation(override.rstrip("/"), override_source)
    path = data_dir / SERVER_FILE
    recorded = _read(path)
    if recorded is not None and _alive(recorded[1]):
        return ServerLocation(recorded[0].rstrip("/"), f"recorded in {path} by pid {recorded[1]}")
    return ServerLocation(url_for(host, port), f"settings host and port; no running server recorded in {path}")


def _read(path: Path) -> tuple[str, int] | None:
    try:
        data = json.loads(path.read_text())
        url, pid = data["url"], data["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or not isinstance(pid, int):
        return None
    return url, pid


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
