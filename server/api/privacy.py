"""DELETE /v1/users/{user}: forget a user, i.e. delete their completions and those events."""
from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from server.api.telemetry import telemetry_of
from server.auth import ADMIN_RESPONSES, require_admin
from server.completions import RequestError
from server.schemas import Error, UserForgotten

router = APIRouter()
ADMIN = [Depends(require_admin)]
log = logging.getLogger("codeloop.privacy")


# `:path` so that a pseudonym holding "/" can be forgotten too (sent as %2F).
@router.delete("/v1/users/{user:path}", response_model=UserForgotten, dependencies=ADMIN,
               responses={**ADMIN_RESPONSES, 404: {"model": Error}, 409: {"model": Error}, 503: {"model": Error}})
async def forget_user(request: Request, user: str = Path(..., min_length=1, max_length=200)):
    """Delete every completion recorded for `user` (the pseudonym sent as `user`) and their
    events, including those still queued. 404 when there are none, so that a mistyped
    pseudonym is not taken for a successful erasure."""
    writer = telemetry_of(request).writer
    try:
        forgotten = await asyncio.wrap_future(writer.forget_user(user))
    except Exception as exc:  # the database cannot be written now; nothing was deleted
        return JSONResponse({"error": f"telemetry store unavailable, nothing deleted; retry later ({exc})"},
                            status_code=503, headers={"Retry-After": "5"})
    if not forgotten.completions:
        raise RequestError(404, f"no telemetry recorded for user {user!r}, nothing deleted; give the pseudonym "
                                "exactly as recorded (the user_id column of `codeloop logs --json`)")
    log.info("forgot user %r: %d completions, %d events", user, forgotten.completions, forgotten.events)
    return UserForgotten(**forgotten.as_dict())
