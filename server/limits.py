"""Checks on the raw request body before it is parsed: size cap, JSON content type, UTF-8."""
from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def is_json_type(content_type: bytes) -> bool:
    """`application/json` or `application/<anything>+json`, any parameters, any case."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


async def refuse(send: Send, status: int, message: str) -> None:
    """Answer `{"error": message}` and close the connection (the body may be unread)."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestBodyGuard:
    """Answer 413 to bodies over `max_bytes` (by Content-Length or while they stream in), 415
    to a body not sent as JSON, and 400 to JSON bodies that are not UTF-8, each with a message
    that says what to fix.

    Every route that takes a body takes JSON. Requiring the JSON content type keeps web pages
    out (server/browser_guard.py): without a CORS preflight a page can only send text/plain,
    form data or a blob without a type, and FastAPI parses a body without one as JSON.

    The body is read here in full (it would be parsed whole anyway) and replayed to the app,
    so the refusal never depends on how the route parses it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await refuse(send, 413, self._too_big())
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await refuse(send, 413, self._too_big())
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
        if body and not is_json_type(content_type):
            shown = content_type.decode("latin-1") or "none"
            return await refuse(send, 415, f"send the body as JSON with `content-type: application/json` (got {shown})")
        if b"json" in content_type:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                return await refuse(send, 400, f"request body is not UTF-8 (bad byte at offset {exc.start}); send JSON encoded as UTF-8")
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)

    def _too_big(self) -> str:
        return f"request body is over {self.max_bytes} bytes (setting max_request_bytes); send less context"
