"""/v1/experiments: start, list, report, stop."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from server.auth import ADMIN_RESPONSES, require_admin
from server.errors import Refused
from server.schemas import BODY_REFUSALS, WRITE_REFUSALS, Error, ExperimentStart, ExperimentStop, refusals

router = APIRouter()
ADMIN = [Depends(require_admin)]
TELEMETRY_OFF = {409: {"model": Error, "description": "experiments need telemetry, which is off on this server"}}


def _manager(request: Request):
    manager = request.app.state.experiments
    if manager is None:
        raise Refused(409, "experiments need telemetry, which is off on this server (setting telemetry = false)")
    return manager


@router.post("/v1/experiments", status_code=201, dependencies=ADMIN,
             responses=refusals(ADMIN_RESPONSES, BODY_REFUSALS, WRITE_REFUSALS, {404: {"model": Error}, 409: {"model": Error}}))
async def start_experiment(body: ExperimentStart, request: Request):
    manager = _manager(request)
    exp = await manager.start(body.name, body.arms, body.control, body.users, body.alpha)
    return manager.public(exp)


@router.get("/v1/experiments", responses=TELEMETRY_OFF)
async def list_experiments(request: Request):
    manager = _manager(request)
    return {"experiments": [manager.public(e) for e in sorted(manager.experiments.values(), key=lambda e: -e.created_at)]}


@router.get("/v1/experiments/{exp_id}", responses={**TELEMETRY_OFF, 404: {"model": Error}})
async def report_experiment(exp_id: str, request: Request):
    """Per arm: shown, accepted, rate with 95 % Wilson interval, chars; z-test and sequential decision."""
    return await _manager(request).report(exp_id)


@router.post("/v1/experiments/{exp_id}/stop", dependencies=ADMIN,
             responses=refusals(ADMIN_RESPONSES, BODY_REFUSALS, WRITE_REFUSALS, {
                 404: {"model": Error}, 409: {"model": Error, "description": "already stopped, no winner yet, or telemetry off"}}))
async def stop_experiment(exp_id: str, request: Request, body: ExperimentStop | None = None):
    manager = _manager(request)
    exp = await manager.stop(exp_id, body.promote if body else None)
    return manager.public(exp)
