"""The one client of codeloop's own HTTP API, used by the CLI and the trainer (so a remote
server works the same as a local one). A refusal or an unreachable server is an `ApiError`
whose message says which and why; the CLI turns it into a message and an exit code
(codeloop/http_api.py), the trainer into a note in its run report.

    api = ApiClient(settings.server_url(), token=settings.api_token)
    api.get("/v1/logs", limit=10)
    api.register("my-adapter@1", Path("adapters/my-adapter@1"))
    export_telemetry(api, Path("out.parquet"), settings.telemetry_db)  # the server's, else the file's
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ApiClient", "ApiError", "NoTelemetry", "TelemetryExport", "error_message", "export_telemetry"]


class ApiError(Exception):
    """The server could not be reached (status None) or refused (its status and reason)."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None,
                 retry_after: float | None = None, timed_out: bool = False):
        super().__init__(message)
        self.status = status
        self.timed_out = timed_out  # unreachable because it did not answer in time (it may be busy)
        self.reason = reason if reason is not None else message  # the server's own words
        self.retry_after = retry_after

    @property
    def unreachable(self) -> bool:
        return self.status is None


def error_message(r: httpx.Response) -> str:
    """The server's reason for a refusal (its `error` field), else the start of the body."""
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    return str(body.get("error", r.text)) if isinstance(body, dict) else r.text[:300]


class ApiClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- any route ---------------------------------------------------------------------------
    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        return self._call("POST", path, json=body, **({"timeout": timeout} if timeout else {}))

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)

    def reachable(self) -> bool:
        try:
            return self._http.get("/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    # -- the routes the trainer uses ---------------------------------------------------------
    def adapters(self) -> dict[str, Any]:
        """{"base_model", "live", "adapters": [{name, path, fim_template, metadata, ...}]}."""
        return self.get("/v1/adapters")

    def register(self, name: str, path: Path) -> dict[str, Any]:
        return self.post("/v1/adapters", {"name": name, "path": str(path)})

    def unload(self, name: str) -> dict[str, Any]:
        return self.delete(f"/v1/adapters/{name}")

    def promote(self, name: str) -> dict[str, Any]:
        return self.post(f"/v1/adapters/{name}/promote")

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/completions as an editor sends it (the body is passed through)."""
        # A CPU server busy with other work (a nightly training, the test suite) can take
        # minutes to answer a full-length prompt; a timeout would lose the whole evaluation.
        return self.post("/v1/completions", body, timeout=600)

    def start_experiment(self, name: str, arms: dict[str, float], control: str) -> dict[str, Any]:
        return self.post("/v1/experiments", {"name": name, "arms": arms, "control": control})

    def export(self, out: Path, since: datetime | None = None) -> Path:
        """The telemetry export (Parquet) written to `out`."""
        params = {"since": since.isoformat()} if since else {}
        try:
            with self._http.stream("GET", "/v1/feedback/export", params=params) as r:
                if r.status_code >= 400:
                    r.read()
                    raise self._refused("GET", "/v1/feedback/export", r)
                with open(out, "wb") as fh:
                    for chunk in r.iter_bytes():
                        fh.write(chunk)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        return out

    # -- the one place responses become errors -----------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if r.status_code >= 400:
            raise self._refused(method, path, r)
        return r.json()

    def _unreachable(self, exc: Exception) -> ApiError:
        return ApiError(f"cannot reach the codeloop server at {self.url} ({exc}); start it with `codeloop serve`, "
                        "or pass --server URL (trainer.server_url for the trainer)",
                        timed_out=isinstance(exc, httpx.TimeoutException))

    @staticmethod
    def _refused(method: str, path: str, r: httpx.Response) -> ApiError:
        reason = error_message(r)
        retry = r.headers.get("Retry-After")
        return ApiError(f"{method} {path} refused ({r.status_code}): {reason}", status=r.status_code, reason=reason,
                        retry_after=float(retry) if retry and retry.replace(".", "", 1).isdigit() else None)


# -- the telemetry export, from the server or else from its file ------------------------------
@dataclass(frozen=True)
class TelemetryExport:
    """An export written to `path`: from the server at `source`, or (`read_directly`) from the
    database file `source`, read because no server answered (`unreachable`: why)."""
    path: Path
    source: str
    read_directly: bool = False
    unreachable: str | None = None
    rows: int | None = None  # counted when read from the file


class NoTelemetry(Exception):
    """No server answered and the database file could not be read instead; `reason` says why not."""

    def __init__(self, unreachable: ApiError | None, reason: str):
        super().__init__(f"{unreachable}; {reason}" if unreachable else reason)
        self.unreachable = unreachable
        self.reason = reason


def export_telemetry(api: ApiClient | None, out: Path, telemetry_db: Path | None,
                     since: datetime | None = None) -> TelemetryExport:
    """The telemetry export (Parquet) written to `out`, for `codeloop export` and the trainer:

    - the server answers: its export (GET /v1/feedback/export);
    - no server answers (ApiError.unreachable, or no `api`): `telemetry_db` read directly,
      read-only, and the result says so; NoTelemetry when there is no file or it cannot be read
      (a running server holds it);
    - the server refuses (401, 403, 5xx, ...): that ApiError, and no fallback (the file may not
      be the one that server serves, and a refusal is not an absence).

    `out` is never left half written (a partial export is still a copy of users' code)."""
    unreachable: ApiError | None = None
    if api is not None:
        try:
            api.export(out, since)
            return TelemetryExport(out, api.url)
        except ApiError as exc:
            out.unlink(missing_ok=True)
            if not exc.unreachable:
                raise
            unreachable = exc
    if telemetry_db is None or not telemetry_db.is_file():
        raise NoTelemetry(unreachable, f"there is no telemetry database{f' at {telemetry_db}' if telemetry_db else ''} "
                                       "to read instead")
    from feedback.db import TelemetryDBError
    from feedback.export import export_file

    try:
        rows = export_file(telemetry_db, out, since)
    except TelemetryDBError as exc:
        raise NoTelemetry(unreachable, f"reading {telemetry_db} instead failed: {exc}") from None
    return TelemetryExport(out, str(telemetry_db), read_directly=True, rows=rows,
                           unreachable=str(unreachable) if unreachable else "no server to ask")
