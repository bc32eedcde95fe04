"""POST /v1/completions (JSON, or server-sent events with stream=true) and GET /v1/models."""
from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from server.auth import principal_of
from server.errors import Refused
from server.schemas import (
    BODY_REFUSALS, WRITE_REFUSALS, CompletionRequest, CompletionResponse, Error, ModelCard, ModelList, refusals,
)

router = APIRouter()
DISCONNECT_POLL_S = 0.05


@router.post("/v1/completions", response_model=CompletionResponse,
             responses=refusals(BODY_REFUSALS, WRITE_REFUSALS, {
                 200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                       "description": "the completion; with stream=true as server-sent events"},
                 404: {"model": Error}, 429: {"model": Error},
                 503: {"model": Error, "description": "the engine failed or cannot be reached now"}}))
async def create_completion(body: CompletionRequest, request: Request):
    principal = principal_of(request)
    if principal is not None:
        # With auth on, the token says who is typing: telemetry and the A/B arm follow it,
        # so a client cannot choose its own arm by sending another `user`.
        body = body.model_copy(update={"user": principal.user})
    _rate_limit(request, body.user or _client_address(request), principal is None)
    # The engine work runs as a task so that a client that hangs up cancels it: the engine
    # then stops within a token or two instead of finishing for nobody.
    task = asyncio.create_task(request.app.state.service.complete(body))
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            # Errors (unknown adapter, limits) come before any event, as plain HTTP errors.
            return _as_events(task.result()) if body.stream else task.result()
        if await request.is_disconnected():
            task.cancel()
            return Response(status_code=499)


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """The base model and the loaded adapters, as vLLM lists them: any id is a valid `model`."""
    engine = request.app.state.engine
    base = engine.model_name
    created = int(request.app.state.started_at)
    cards = [ModelCard(id=base, created=created, root=base)]
    cards += [ModelCard(id=name, created=created, root=base, parent=base) for name in sorted(request.app.state.registry.records)]
    return ModelList(data=cards)


def _as_events(response: CompletionResponse) -> StreamingResponse:
    """OpenAI's streaming format for a finished completion: post-processing needs the whole
    answer, so the suggestion comes in one event, then one with finish_reason and usage."""
    head = response.model_dump(exclude={"choices", "usage", "timings"})
    choice = response.choices[0]
    events = [
        {**head, "choices": [{"index": 0, "text": choice.text, "logprobs": None, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": choice.finish_reason}],
         "usage": {**response.usage.model_dump(), "total_tokens": response.usage.prompt_tokens + response.usage.completion_tokens}},
    ]
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    return StreamingResponse(iter([body]), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _rate_limit(request: Request, user: str, auth_off: bool) -> None:
    """429 once the user's bucket is empty, or (auth off: `user` is the client's choice) the
    client address's, which holds rate_limit_users_per_address users' worth."""
    state = request.app.state
    wait = state.rate_limiter.acquire(user)
    who = "this user"
    if not wait and auth_off:
        wait, who = state.address_limiter.acquire(_client_address(request)), "this address"
    if wait:
        state.metrics.rate_limited.inc()
        raise Refused(429, f"too many completion requests from {who}; retry in {wait:.1f} s "
                           "(settings rate_limit_per_minute, rate_limit_burst, rate_limit_users_per_address)",
                      retry_after=wait)


def _client_address(request: Request) -> str:
    return f"address:{request.client.host}" if request.client else "anonymous"
