"""DELETE /v1/users/{user}: forget a user: their telemetry, and every copy of it (SECURITY.md)."""
from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends, Path, Request

from feedback import copies
from server.api.telemetry import telemetry_of
from server.auth import ADMIN_RESPONSES, require_admin
from server.errors import Refused
from server.schemas import WRITE_REFUSALS, Error, UserForgotten, refusals

router = APIRouter()
ADMIN = [Depends(require_admin)]
log = logging.getLogger("codeloop.privacy")


# `:path` so that a pseudonym holding "/" can be forgotten too (sent as %2F). Unset counts
# (no experiment listed them, no training copy held them) are left out of the answer.
@router.delete("/v1/users/{user:path}", response_model=UserForgotten, response_model_exclude_defaults=True, dependencies=ADMIN,
               responses=refusals(ADMIN_RESPONSES, WRITE_REFUSALS,
                                  {404: {"model": Error}, 409: {"model": Error}, 503: {"model": Error}}))
async def forget_user(request: Request, user: str = Path(..., min_length=1, max_length=200)):
    """Delete every completion recorded for `user` (the pseudonym sent as `user`) and their
    events, including those still queued, and their blind-review votes; take them off
    experiments' `users` lists; remove their examples and rows from the training copies
    under data_dir; then rewrite the
    database file, so that the deleted rows are gone from it too. 404 when none of that found
    anything, so that a mistyped pseudonym is not taken for a successful erasure."""
    telemetry = telemetry_of(request)
    state = request.app.state
    await telemetry.settled()  # their completions still being scrubbed are queued first
    if state.experiments is not None:
        state.experiments.forget_user(user)
    try:
        forgotten = await asyncio.wrap_future(telemetry.writer.forget_user(user))
    except Exception as exc:  # the database cannot be written now; nothing was deleted
        raise Refused(503, f"telemetry store unavailable, nothing deleted; retry later ({exc})", retry_after=5) from None
    examples = await asyncio.to_thread(copies.forget_user, state.data_dir, user)
    in_db = forgotten.completions or forgotten.experiments or forgotten.review_votes
    if not (in_db or examples):
        raise Refused(404, f"no telemetry recorded for user {user!r}, nothing deleted; give the pseudonym "
                           "exactly as recorded (the user_id column of `codeloop logs --json`)")
    # Only when the database changed: rewriting it is a pause for every writer.
    compacted = await _compact(telemetry.writer) if in_db else None
    log.info("forgot user %r: %d completions, %d events, %d experiment lists, %d review votes, %d training examples; "
             "file rewritten: %s", user, forgotten.completions, forgotten.events, forgotten.experiments,
             forgotten.review_votes, examples, compacted)
    return UserForgotten(**forgotten.as_dict(), experiments=forgotten.experiments, review_votes=forgotten.review_votes,
                         training_examples=examples)


async def _compact(writer) -> bool:
    """Rewrite the database without the deleted rows' bytes; on failure (a full disk, say) the
    rows are still deleted, only not yet overwritten in the file: say so, do not fail."""
    try:
        await asyncio.wrap_future(writer.compact())
    except Exception as exc:
        log.warning("forget: the telemetry file was not rewritten, deleted rows stay in its free blocks until "
                    "it is (the next forget, or see SECURITY.md): %s", exc)
        return False
    return True
