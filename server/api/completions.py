"""POST /v1/completions."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.auth import principal_of
from server.completions import RequestError
from server.schemas import BODY_REFUSALS, WRITE_REFUSALS, CompletionRequest, CompletionResponse, Error, refusals

router = APIRouter()
DISCONNECT_POLL_S = 0.05


@router.post("/v1/completions", response_model=CompletionResponse,
             responses=refusals(BODY_REFUSALS, WRITE_REFUSALS, {
                 404: {"model": Error}, 429: {"model": Error},
                 503: {"model": Error, "description": "the engine failed or cannot be reached now"}}))
async def create_completion(body: CompletionRequest, request: Request):
    principal = principal_of(request)
    if principal is not None:
        # With auth on, the token says who is typing: telemetry and the A/B arm follow it,
        # so a client cannot choose its own arm by sending another `user`.
        body = body.model_copy(update={"user": principal.user})
    wait = request.app.state.rate_limiter.acquire(body.user or _client_address(request))
    if wait:
        request.app.state.metrics.rate_limited.inc()
        raise RequestError(429, f"too many completion requests from this user; retry in {wait:.1f} s "
                                "(settings rate_limit_per_minute, rate_limit_burst)", retry_after=wait)
    # The engine work runs as a task so that a client that hangs up cancels it: the engine
    # then stops within a token or two instead of finishing for nobody.
    task = asyncio.create_task(request.app.state.service.complete(body))
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            return Response(status_code=499)


def _client_address(request: Request) -> str:
    return f"address:{request.client.host}" if request.client else "anonymous"
