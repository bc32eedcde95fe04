"""The one client of codeloop's own HTTP API, used by the CLI and the trainer (so a remote
server works the same as a local one). A refusal or an unreachable server is an `ApiError`
whose message says which and why; the CLI turns it into a message and an exit code
(codeloop/http_api.py), the trainer into a note in its run report.

    api = ApiClient(settings.server_url(), token=settings.api_token)
    api.get("/v1/logs", limit=10)
    api.register("my-adapter@1", Path("adapters/my-adapter@1"))
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ApiClient", "ApiError", "error_message"]


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
