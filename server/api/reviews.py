"""/v1/reviews: blind review of two adapters' suggestions (logic in server/reviews.py), and
GET /review/{id}, the page reviewers vote on (server/review_page.py).

Admins create, list, report on and close reviews; any user fetches their next task and votes.
With auth on the reviewer is the token's user (a `reviewer` the request names is ignored, so
nobody votes as someone else); with auth off it is the `reviewer` the page sends.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse

from server.auth import ADMIN_RESPONSES, principal_of, require_admin
from server.errors import Problem, Refused
from server.review_page import render_not_found, render_review
from server.reviews import ReviewError, ReviewService
from server.schemas import BODY_REFUSALS, WRITE_REFUSALS, Error, ReviewCreate, ReviewVote, refusals

router = APIRouter()
ADMIN = [Depends(require_admin)]
TELEMETRY_OFF = {409: {"model": Error, "description": "reviews need telemetry, which is off on this server"}}
UNKNOWN = {404: {"model": Error, "description": "no such review (or task)"}}
UNAVAILABLE = {503: {"model": Error, "description": "the telemetry database cannot be used now; retry"}}
ReviewId = Path(..., min_length=1, max_length=100, description="e.g. rev-0123456789ab")


def _service(request: Request) -> ReviewService:
    service = getattr(request.app.state, "reviews", None)
    if service is None:
        raise Refused(409, "reviews need telemetry, which is off on this server (setting telemetry = false)")
    return service


def _reviewer(request: Request, named: str | None) -> str:
    principal = principal_of(request)
    if principal is not None:
        return principal.user
    if named is None or not named.strip() or len(named) > 200 or not named.isprintable():
        raise Refused(422, "reviewer: give who votes as `reviewer`, 1 to 200 printable characters "
                           "(auth is off, so the server cannot tell from a token)")
    return named


@router.post("/v1/reviews", status_code=201, dependencies=ADMIN,
             responses=refusals(ADMIN_RESPONSES, BODY_REFUSALS, WRITE_REFUSALS, TELEMETRY_OFF, UNAVAILABLE))
async def create_review(body: ReviewCreate, request: Request):
    """A review of `tasks` (held-out lines and both adapters' answers); answers equal but for
    surrounding blanks are kept but never shown. Answers the review's summary."""
    return await _service(request).create(a=body.a, b=body.b, name=body.name, repo=body.repo, since=body.since,
                                          tasks=body.tasks)


@router.get("/v1/reviews", dependencies=ADMIN, responses=refusals(ADMIN_RESPONSES, TELEMETRY_OFF, UNAVAILABLE))
async def list_reviews(request: Request):
    """Every review's summary, newest first."""
    return {"reviews": await _service(request).list()}


@router.get("/v1/reviews/{review_id}", dependencies=ADMIN,
            responses=refusals(ADMIN_RESPONSES, TELEMETRY_OFF, UNKNOWN, UNAVAILABLE))
async def report_review(request: Request, review_id: str = ReviewId):
    """Wins per adapter, B's win rate with its 95 % Wilson interval, the exact sign test,
    agreement between reviewers, automatic scores, and the verdict."""
    return await _service(request).report(review_id)


@router.post("/v1/reviews/{review_id}/close", dependencies=ADMIN,
             responses=refusals(ADMIN_RESPONSES, WRITE_REFUSALS, TELEMETRY_OFF, UNKNOWN, UNAVAILABLE))
async def close_review(request: Request, review_id: str = ReviewId):
    """Take no more votes; the report stays."""
    return await _service(request).close(review_id)


@router.delete("/v1/reviews/{review_id}", dependencies=ADMIN,
               responses=refusals(ADMIN_RESPONSES, WRITE_REFUSALS, TELEMETRY_OFF, UNKNOWN, UNAVAILABLE))
async def delete_review(request: Request, review_id: str = ReviewId):
    """Delete the review, its tasks (the repository code and both adapters' answers) and its
    votes; answers the summary it had, with `deleted: true`."""
    return await _service(request).delete(review_id)


@router.get("/v1/reviews/{review_id}/next", responses=refusals(TELEMETRY_OFF, UNKNOWN, UNAVAILABLE))
async def next_task(request: Request, review_id: str = ReviewId,
                    reviewer: str | None = Query(None, max_length=200, description="auth off: who asks (required)")):
    """The reviewer's next task: the code around the cursor and two answers, `left` and
    `right`, in an order drawn per task; nothing says which adapter wrote which. `task` is null
    when they have voted on every shown task, or the review is closed."""
    service = _service(request)
    return await service.next_task(review_id, _reviewer(request, reviewer))


@router.post("/v1/reviews/{review_id}/votes", status_code=201,
             responses=refusals(BODY_REFUSALS, WRITE_REFUSALS, UNKNOWN, UNAVAILABLE, {409: {
                 "model": Error, "description": "the review is closed, the task is not shown (identical answers), "
                                                "the reviewer already voted on it, or telemetry is off"}}))
async def vote(body: ReviewVote, request: Request, review_id: str = ReviewId):
    """One vote per reviewer and task: `left`, `right`, `tie` or `skip`. Answers what the
    author wrote, and the reviewer's progress."""
    service = _service(request)
    return await service.vote(review_id, body.task_id, _reviewer(request, body.reviewer), body.choice)


# The page (server/review_page.py) is on its own router, included without require_user: it
# must load without a token to ask for one, and with auth on it carries nothing but the id.
pages = APIRouter()


@pages.get("/review/{review_id}", response_class=HTMLResponse, include_in_schema=False)
async def review_page(request: Request, review_id: str):
    """The blind-review page: fetches /next and posts /votes itself, as the reviewer."""
    locked = request.app.state.tokens.enabled
    service = getattr(request.app.state, "reviews", None)
    # With auth on, an unknown id is told only to a token holder (by the API the page calls):
    # the page answers nobody whether a review exists. Telemetry off: the API's 409 says so.
    if service is not None and not locked:
        try:
            await service.summary(review_id)
        except ReviewError as exc:
            if exc.problem is Problem.NOT_FOUND:
                return HTMLResponse(render_not_found(review_id), status_code=404)
            # Anything else (a busy database): the page's own requests show the API's answer.
    return HTMLResponse(render_review(review_id, locked))

