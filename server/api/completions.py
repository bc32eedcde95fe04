"""POST /v1/completions."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.schemas import CompletionRequest, CompletionResponse, Error

router = APIRouter()
DISCONNECT_POLL_S = 0.05


@router.post("/v1/completions", response_model=CompletionResponse, responses={404: {"model": Error}, 429: {"model": Error}})
async def create_completion(body: CompletionRequest, request: Request):
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
