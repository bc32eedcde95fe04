"""/v1/adapters: list, load (validate + hash), promote, unload."""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from server.adapters import AdapterError, AdapterRegistry
from server.auth import ADMIN_RESPONSES, require_admin
from server.schemas import BODY_REFUSALS, WRITE_REFUSALS, AdapterInfo, AdapterList, AdapterLoad, Error, refusals

router = APIRouter()
ADMIN = [Depends(require_admin)]


def adapter_list(registry: AdapterRegistry) -> AdapterList:
    infos = [AdapterInfo(**r.__dict__, live=r.name == registry.live) for r in registry.records.values()]
    return AdapterList(base_model=registry.engine.model_name, live=registry.live, adapters=infos)


@router.get("/v1/adapters", response_model=AdapterList)
async def list_adapters(request: Request):
    return adapter_list(request.app.state.registry)


@router.post("/v1/adapters", response_model=AdapterInfo, status_code=201, dependencies=ADMIN,
             responses=refusals(ADMIN_RESPONSES, BODY_REFUSALS, WRITE_REFUSALS, {
                 404: {"model": Error}, 409: {"model": Error},
                 413: {"model": Error, "description": "an adapter over adapter_max_mb"},
                 503: {"model": Error, "description": "the engine's backend cannot be reached now"}}))
async def load_adapter(body: AdapterLoad, request: Request):
    metrics = request.app.state.metrics
    started = time.monotonic()
    try:
        record = await request.app.state.registry.register(body.name, body.path)
    except AdapterError:
        metrics.adapter_loads.labels("refused").inc()
        raise
    metrics.adapter_loads.labels("loaded").inc()
    metrics.adapter_load_seconds.observe(time.monotonic() - started)
    return AdapterInfo(**record.__dict__, live=False)


@router.post("/v1/adapters/{name}/promote", response_model=AdapterList, dependencies=ADMIN,
             responses=refusals(ADMIN_RESPONSES, WRITE_REFUSALS, {404: {"model": Error}}))
async def promote_adapter(name: str, request: Request):
    await request.app.state.registry.promote(name)
    return adapter_list(request.app.state.registry)


@router.delete("/v1/adapters/{name}", response_model=AdapterList, dependencies=ADMIN,
               responses=refusals(ADMIN_RESPONSES, WRITE_REFUSALS, {
                   404: {"model": Error}, 409: {"model": Error, "description": "live, or an arm of a running experiment"}}))
async def delete_adapter(name: str, request: Request):
    state = request.app.state
    in_use = state.experiments.adapters_in_use() if state.experiments else set()
    await state.registry.unload(name, in_use=in_use)
    return adapter_list(state.registry)
