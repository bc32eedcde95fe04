"""HTTP to codeloop's server: completions and events. lsp/ keeps its own small wire types
(it never imports server/); they follow DESIGN.md's API."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Suggestion:
    completion_id: str
    text: str
    adapter: str | None = None


@dataclass(frozen=True)
class Route:
    """Where the server sent a completion: the adapter (None: the base model) and the A/B
    experiment arm, if any. The status bar shows the last one."""

    adapter: str | None
    experiment: str | None = None
    arm: str | None = None


class ServerUnavailable(Exception):
    """The server could not be reached, timed out or answered 5xx: try again later."""


class EventsRefused(Exception):
    """The server refused a batch of events (4xx): sending it again will not help."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class ServerClient:
    """One pooled async client. Cancelling a call closes its connection, which the server
    sees as a disconnect and stops the engine for."""

    def __init__(self, base_url: str, token: str | None, timeout_s: float, on_auth_refused: Callable[[str], None] | None = None,
                 on_problem: Callable[[str], None] | None = None) -> None:
        headers = {"User-Agent": "codeloop-lsp"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url
        self.last_route: Route | None = None
        self.busy_until = 0.0  # monotonic time before which completions are not asked for (429)
        self.busy_answers = 0
        # Told once per client (i.e. per token setting) when the server refuses the token:
        # otherwise the editor would just never show a suggestion, with no hint why.
        self.on_auth_refused = on_auth_refused
        self.auth_refused = False
        # Other problems the user must see (unreachable server, refused requests), each told
        # once: the unreachable server again only after it answered in between.
        self.on_problem = on_problem or (lambda message: None)
        self._told: set[str] = set()
        self._max_tokens_limit: int | None = None
        # False once the server refused line_latency_ms (a server from before it): left out then.
        self.line_budget_known = True
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
        )

    async def complete(self, body: dict) -> Suggestion | None:
        """A suggestion, or None when the server answered with nothing. Raises
        ServerUnavailable on timeouts and connection errors."""
        if time.monotonic() < self.busy_until:
            return None  # the server said 429: no suggestion now, and no request until Retry-After
        if not self.line_budget_known:
            body = {k: v for k, v in body.items() if k != "line_latency_ms"}
        try:
            resp = await self._http.post("/v1/completions", json=body)
        except httpx.HTTPError as exc:
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                self._tell("unreachable", f"cannot reach the completion server at {self.base_url} ({type(exc).__name__}): "
                                          "no suggestions until it answers; check serverUrl (codeloop.serverUrl in VS Code)")
            raise ServerUnavailable(f"{type(exc).__name__}: {exc}") from None
        self._told.discard("unreachable")  # it answers: a later outage is told again
        if resp.status_code != 200:
            if resp.status_code == 429:
                self.busy_until = time.monotonic() + _retry_after_s(resp)
                self.busy_answers += 1
                log.info("server busy (HTTP 429: %s); no suggestions for %.1f s", _error_text(resp), self.busy_until - time.monotonic())
                return None
            if resp.status_code == 422 and "line_latency_ms" in body and _unknown_field(resp, "line_latency_ms"):
                log.info("the server does not know line_latency_ms (an older codeloop): asking without it")
                self.line_budget_known = False
                return await self.complete(body)
            if resp.status_code >= 500:
                raise ServerUnavailable(f"HTTP {resp.status_code}: {_error_text(resp)}")
            if resp.status_code in (401, 403) and not self.auth_refused:
                self.auth_refused = True
                if self.on_auth_refused is not None:
                    self.on_auth_refused(_error_text(resp))
            message = f"the completion server at {self.base_url} refused the request (HTTP {resp.status_code}): {_error_text(resp)}"
            if resp.status_code not in (401, 403):
                self._tell(message, message)
            log.warning(message)
            return None
        data = resp.json()
        self.last_route = Route(data.get("adapter"), data.get("experiment"), data.get("arm"))
        choices = data.get("choices") or []
        text = choices[0].get("text", "") if choices else ""
        if not text:
            return None
        return Suggestion(data["id"], text, data.get("adapter"))

    async def allowed_max_tokens(self, requested: int) -> int:
        """``requested`` clamped to the server's max_tokens_limit (from /healthz, asked once)."""
        if self._max_tokens_limit is None:
            try:
                limit = (await self.get("/healthz")).get("max_tokens_limit")
            except ServerUnavailable:
                return requested  # asked again next time; the request itself will say what is wrong
            self._max_tokens_limit = limit if isinstance(limit, int) and limit > 0 else 0
        if self._max_tokens_limit and requested > self._max_tokens_limit:
            self._tell("max_tokens", f"maxTokens {requested} is over the server's limit of {self._max_tokens_limit}; "
                                     f"asking for {self._max_tokens_limit}")
            return self._max_tokens_limit
        return requested

    def _tell(self, key: str, message: str) -> None:
        if key not in self._told:
            self._told.add(key)
            self.on_problem(message)

    async def post_events(self, events: list[dict]) -> int:
        """Store events; returns how many were new. Only returns once they are committed."""
        try:
            resp = await self._http.post("/v1/events", json={"events": events})
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"{type(exc).__name__}: {exc}") from None
        if resp.status_code == 200:
            return int(resp.json().get("stored", 0))
        # 401/403: the token is missing or wrong; the events wait in the spool until it is fixed
        # (a new token in the settings), they are not the server's to refuse.
        if resp.status_code >= 500 or resp.status_code in (401, 403, 408, 429):
            raise ServerUnavailable(f"HTTP {resp.status_code}: {_error_text(resp)}")
        raise EventsRefused(resp.status_code, _error_text(resp))

    async def get(self, path: str, params: dict | None = None) -> dict:
        """GET a JSON answer; ServerUnavailable for anything but 200 (with the server's reason)."""
        try:
            resp = await self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"{type(exc).__name__}: {exc}") from None
        if resp.status_code != 200:
            raise ServerUnavailable(f"HTTP {resp.status_code}: {_error_text(resp)}")
        return resp.json()

    async def aclose(self) -> None:
        await self._http.aclose()


def _unknown_field(resp: httpx.Response, name: str) -> bool:
    """A 422 saying the request had a field `name` that this server does not know."""
    return any(name in part and "Extra inputs are not permitted" in part for part in _error_text(resp).split(";"))


def _error_text(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("error", resp.text))[:500]
    except ValueError:
        return resp.text[:500]


def _retry_after_s(resp: httpx.Response) -> float:
    """Retry-After in seconds (1 when absent or unreadable; at most a minute)."""
    try:
        return min(60.0, max(0.0, float(resp.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0
