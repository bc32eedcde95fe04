"""The FastAPI application: builds the parts, wires the routes (server/api/), maps errors."""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.adapters import AdapterError, AdapterRegistry
from server.api import adapters as adapters_api
from server.api import completions as completions_api
from server.api import experiments as experiments_api
from server.api import privacy as privacy_api
from server.api import telemetry as telemetry_api
from server.api.adapters import adapter_list
from server.completions import CompletionService, RequestError
from server.dashboard import render_home
from server.engines import Engine, EngineBusy, EngineError, make_engine
from server.limits import RequestBodyGuard
from server.metrics import RequestMetrics, ServerMetrics
from server.schemas import Error

log = logging.getLogger("codeloop.server")


def create_app(settings, model_dir: Path, engine: Engine | None = None) -> FastAPI:
    """`settings` is codeloop's Settings (any object with the same attributes will do)."""
    engine = engine or make_engine(settings, model_dir)
    metrics = ServerMetrics()
    registry = AdapterRegistry(
        engine,
        adapters_dir=settings.adapters_dir,
        state_file=settings.data_dir / "adapters.json",
        max_bytes=settings.adapter_max_mb * 2**20,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.adapters_dir.mkdir(parents=True, exist_ok=True)
        writer = telemetry = experiments = retention = None
        if settings.telemetry:
            from feedback.writer import TelemetryWriter
            from server.experiments import ExperimentManager
            from server.retention import RetentionJob
            from server.telemetry import Telemetry

            writer = TelemetryWriter(settings.telemetry_db, store_code=settings.store_code)
            writer.start()
            telemetry = Telemetry(writer, metrics)
            experiments = ExperimentManager(registry, writer)
            experiments.restore()
            if settings.retention_days:  # also with store_code off: code stored before then expires too
                retention = asyncio.create_task(RetentionJob(writer, settings.retention_days, metrics).run())
        await engine.start()
        for problem in await registry.restore():
            log.warning(problem)
        app.state.telemetry, app.state.experiments = telemetry, experiments
        app.state.service = CompletionService(engine, registry, metrics, settings, experiments=experiments, telemetry=telemetry)
        app.state.started_at = time.time()
        try:
            yield
        finally:
            if retention is not None:
                retention.cancel()
                await asyncio.gather(retention, return_exceptions=True)
            await engine.close()
            if writer is not None:
                writer.close()  # flushes every queued completion and event

    app = FastAPI(title="codeloop", version="0.1.0", lifespan=lifespan, responses={422: {"model": Error}})
    app.add_middleware(RequestBodyGuard, max_bytes=settings.max_request_bytes)
    # Pure ASGI (not @app.middleware): BaseHTTPMiddleware hides client disconnects from routes.
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.state.engine, app.state.registry, app.state.metrics = engine, registry, metrics
    app.state.telemetry = app.state.experiments = None
    for module in (completions_api, adapters_api, telemetry_api, experiments_api, privacy_api):
        app.include_router(module.router)
    _install_error_handlers(app)

    @app.get("/healthz")
    async def healthz(request: Request):
        telemetry = request.app.state.telemetry
        writer_status = telemetry.writer.status() if telemetry else None
        return {
            "status": "ok" if writer_status is None or writer_status["healthy"] else "degraded",
            "model": engine.model_name,
            "engine": settings.engine,
            "live_adapter": registry.live,
            "adapters": engine.adapters(),
            "queue_depth": engine.queue_depth(),
            "telemetry": writer_status,
            "uptime_s": round(time.time() - app.state.started_at, 1),
        }

    @app.get("/metrics")
    async def prometheus_metrics(request: Request):
        for n in engine.cancel_stats.drain():
            metrics.tokens_after_cancel.observe(n)
        metrics.cancelled_tokens.inc(engine.cancel_stats.drain_cancelled_tokens())
        metrics.queue_depth.set(engine.queue_depth())
        metrics.adapters_loaded.set(len(engine.adapters()))
        telemetry = request.app.state.telemetry
        if telemetry is not None:
            metrics.observe_writer(telemetry.writer.status())
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse)
    async def home():
        return render_home(engine.model_name, settings.engine, adapter_list(registry))

    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Every refusal is JSON `{"error": "what to fix"}` with a 4xx status."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg')}")
        return JSONResponse({"error": "; ".join(problems) or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(AdapterError)
    async def adapter_error(request: Request, exc: AdapterError):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(EngineBusy)
    async def engine_busy(request: Request, exc: EngineBusy):
        return JSONResponse({"error": str(exc)}, status_code=429, headers={"Retry-After": "1"})

    @app.exception_handler(EngineError)
    async def engine_error(request: Request, exc: EngineError):
        return JSONResponse({"error": f"the engine failed: {exc}"}, status_code=503)
