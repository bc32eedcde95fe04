"""The few server routes the trainer uses, over HTTP (so a remote server works the same)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx


class ServerError(Exception):
    """The server could not be reached or refused; the message says which and why."""


class ServerApi:
    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def reachable(self) -> bool:
        try:
            return self._http.get("/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def adapters(self) -> dict[str, Any]:
        """{"base_model", "live", "adapters": [{name, path, fim_template, metadata, ...}]}."""
        return self._call("GET", "/v1/adapters")

    def register(self, name: str, path: Path) -> dict[str, Any]:
        return self._call("POST", "/v1/adapters", json={"name": name, "path": str(path)})

    def unload(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/adapters/{name}")

    def promote(self, name: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/adapters/{name}/promote")

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/completions as an editor sends it (the body is passed through)."""
        # A CPU server busy with other work (a nightly training, the test suite) can take
        # minutes to answer a full-length prompt; a timeout would lose the whole evaluation.
        return self._call("POST", "/v1/completions", json=body, timeout=600)

    def start_experiment(self, name: str, arms: dict[str, float], control: str) -> dict[str, Any]:
        return self._call("POST", "/v1/experiments", json={"name": name, "arms": arms, "control": control})

    def export(self, out: Path, since: datetime | None = None) -> Path:
        """The telemetry export (Parquet) written to `out`."""
        params = {"since": since.isoformat()} if since else {}
        try:
            with self._http.stream("GET", "/v1/feedback/export", params=params) as r:
                if r.status_code >= 400:
                    r.read()
                    raise ServerError(f"{self.url} refused the telemetry export ({r.status_code}): {_message(r)}")
                with open(out, "wb") as fh:
                    for chunk in r.iter_bytes():
                        fh.write(chunk)
        except httpx.TransportError as exc:
            raise ServerError(f"cannot reach the codeloop server at {self.url}: {exc}") from None
        return out

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerError(f"cannot reach the codeloop server at {self.url} ({exc}); start it with `codeloop serve` "
                              "or set trainer.server_url") from None
        if r.status_code >= 400:
            raise ServerError(f"{method} {path} refused ({r.status_code}): {_message(r)}")
        return r.json()


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error", r.text))
    except ValueError:
        return r.text[:300]
