"""Telemetry routes: events in; acceptance metrics, recent completions and exports out."""
from __future__ import annotations

import asyncio
import json
import tempfile
from contextlib import closing
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Literal

import duckdb
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import TypeAdapter, ValidationError
from starlette.background import BackgroundTask

from feedback import export, queries
from feedback.writer import TelemetryWriteError
from server.auth import ADMIN_RESPONSES, principal_of, require_admin
from server.errors import Refused
from server.schemas import (BODY_REFUSALS, MAX_EVENTS_PER_BATCH, WRITE_REFUSALS, Error, Event, EventBatch, EventsStored,
                            events_body_schema, refusals)
from server.telemetry import EventError

router = APIRouter()
ADMIN = [Depends(require_admin)]
# One shape per body, chosen by its JSON type, so that an error names the bad event
# (`events[3].kind`) instead of listing what each of the three shapes would have wanted.
_BATCH, _LIST, _ONE = TypeAdapter(EventBatch), TypeAdapter(list[Event]), TypeAdapter(Event)
TELEMETRY_OFF = {409: {"model": Error, "description": "telemetry is off on this server"}}
# What the read routes (_read) may answer besides their result.
READ_REFUSALS = {**TELEMETRY_OFF, 503: {"model": Error, "description": "the telemetry database is unavailable now; retry"}}
MAX_OFFSET = 2**63 - 1  # DuckDB's BIGINT: a larger OFFSET was a 500


def telemetry_of(request: Request):
    telemetry = request.app.state.telemetry
    if telemetry is None:
        raise Refused(409, "telemetry is off on this server (setting telemetry = false)")
    return telemetry


@router.post("/v1/events", response_model=EventsStored,
             responses=refusals(BODY_REFUSALS, TELEMETRY_OFF, WRITE_REFUSALS, {422: {"model": Error}, 503: {"model": Error}}),
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": events_body_schema()}}}})
async def post_events(request: Request):
    """One event, `{"events": [...]}` or a list. Answers only after the events are committed."""
    telemetry = telemetry_of(request)
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise Refused(422, f"the body is not JSON: {exc}") from None
    shape = _BATCH if isinstance(body, dict) and "events" in body else _LIST if isinstance(body, list) else _ONE
    try:
        parsed = shape.validate_python(body)
    except ValidationError as exc:
        raise Refused(422, _describe(exc)) from None
    events = parsed.events if isinstance(parsed, EventBatch) else parsed if isinstance(parsed, list) else [parsed]
    if not events or len(events) > MAX_EVENTS_PER_BATCH:
        raise Refused(422, f"send 1 to {MAX_EVENTS_PER_BATCH} events per request (got {len(events)})")
    principal = principal_of(request)
    # A user token reports only its own suggestions' fate; an admin token (a relay) any.
    owner = principal.user if principal is not None and not principal.admin else None
    try:
        stored = await telemetry.record_events(events, owner)
    except EventError as exc:
        raise Refused(exc.status, "nothing stored: " + str(exc)) from None  # the status its Problem maps to
    except Exception as exc:  # the commit failed (disk full, I/O error): the client must retry
        raise Refused(503, f"telemetry store unavailable, nothing stored; retry later ({exc})", retry_after=5) from None
    request.app.state.metrics.events.inc(len(events))
    return EventsStored(received=len(events), stored=stored)


async def _read(request: Request, query, *args):
    """Run a feedback query on its own cursor, off the event loop."""
    writer = telemetry_of(request).writer

    def run():
        with closing(writer.reader()) as cursor:
            return query(cursor, *args)

    try:
        return await asyncio.to_thread(run)
    except (TelemetryWriteError, duckdb.ConnectionException, duckdb.FatalException, duckdb.IOException) as exc:
        # The writer is reopening the database after a fatal I/O error (e.g. a full disk).
        raise Refused(503, f"telemetry database unavailable, retry later: {exc}") from None


def _describe(exc: ValidationError) -> str:
    """`events[3].kind: Input should be ...; events[7]: ...` (at most 10)."""
    problems = []
    for err in exc.errors()[:10]:
        where = ""
        for part in err.get("loc", ()):
            where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
        if where.startswith("["):
            where = "events" + where
        problems.append(f"{where or 'event'}: {err['msg']}")
    return "; ".join(dict.fromkeys(problems)) or "invalid events"


@router.get("/v1/metrics/acceptance", responses=READ_REFUSALS)
async def acceptance(request: Request, by: Literal["adapter", "language", "client", "day", "context"] = "adapter",
                     since: datetime | None = None, until: datetime | None = None,
                     adapter: str | None = Query(None, description="only this adapter ('base' = no adapter)")):
    """Acceptance rate, accepted characters per shown suggestion, retained characters, latency."""
    rows = await _read(request, queries.acceptance, by, since, until, adapter)
    return {"by": by, "rows": [asdict(r) for r in rows]}


@router.get("/v1/logs", dependencies=ADMIN, responses={**ADMIN_RESPONSES, **READ_REFUSALS})
async def recent(request: Request, limit: int = Query(20, ge=1, le=1000), offset: int = Query(0, ge=0, le=MAX_OFFSET),
                 adapter: str | None = None, user: str | None = None):
    """Recent completions with their outcomes, newest first (what `codeloop logs` shows)."""
    return {"rows": await _read(request, queries.recent_completions, limit, offset, adapter, user)}


@router.get("/v1/feedback/export", response_class=FileResponse, dependencies=ADMIN,
            responses={**ADMIN_RESPONSES, **READ_REFUSALS, 200: {"content": {"application/vnd.apache.parquet": {}}}})
async def export_feedback(request: Request, since: datetime | None = None):
    """Parquet of completions joined with their outcomes, for the trainer."""
    folder = Path(tempfile.mkdtemp(prefix="codeloop-export-"))
    out = folder / "feedback.parquet"
    await _read(request, export.export_parquet, out, since)
    return FileResponse(out, media_type="application/vnd.apache.parquet", filename="codeloop-feedback.parquet",
                        background=BackgroundTask(_remove, folder))


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
