"""The FastAPI application: builds the parts, wires the routes (server/api/), maps errors."""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from codeloop.fim import PREFIX_ONLY_NOTE
from server.adapters import AdapterRegistry
from server.api import adapters as adapters_api
from server.api import completions as completions_api
from server.api import experiments as experiments_api
from server.api import privacy as privacy_api
from server.api import reviews as reviews_api
from server.api import telemetry as telemetry_api
from server.api.adapters import adapter_list
from server.auth import USER_RESPONSES, require_user
from server.browser_guard import BrowserGuard, HostPolicy
from server.completions import CompletionService
from server.dashboard import render_home
from server.engines import Engine, EngineBusy, EngineError, engine_choice, make_engine
from server.errors import DomainError, Refused
from server.limits import RequestBodyGuard
from server.metrics import RequestMetrics, ServerMetrics
from server.ratelimit import RateLimiter, retry_after_header
from server.schemas import HOST_REFUSALS, Error, refusals
from server.tokens import TokenStore

log = logging.getLogger("codeloop.server")


def create_app(settings, model_dir: Path, engine: Engine | None = None) -> FastAPI:
    """`settings` is codeloop's Settings (any object with the same attributes will do)."""
    engine = engine or make_engine(settings, model_dir)
    choice = engine_choice(engine, settings)  # "auto" resolved: which engine answers, and why
    metrics = ServerMetrics()
    host_policy = HostPolicy(settings.host, settings.allowed_hosts)
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
            from server.reviews import ReviewService
            from server.telemetry import Telemetry

            writer = TelemetryWriter(settings.telemetry_db, store_code=settings.store_code,
                                     flush_interval_s=settings.telemetry_batch_ms / 1000)
            writer.start()
            telemetry = Telemetry(writer, metrics)
            experiments = ExperimentManager(registry, writer)
            experiments.restore()
            app.state.reviews = ReviewService(writer)
            if settings.retention_days:  # also with store_code off: code stored before then expires too
                retention = asyncio.create_task(RetentionJob(writer, settings.retention_days, metrics,
                                                             data_dir=settings.data_dir).run())
        _announce_exposure(settings, app.state.tokens, host_policy)
        await engine.start()
        for problem in await registry.restore():
            log.warning(problem)
        app.state.telemetry, app.state.experiments = telemetry, experiments
        app.state.service = CompletionService(engine, registry, metrics, settings, experiments=experiments, telemetry=telemetry)
        if not app.state.service.template_for(registry.live).supports_suffix:
            log.info(PREFIX_ONLY_NOTE)
        app.state.started_at = time.time()
        try:
            yield
        finally:
            if retention is not None:
                retention.cancel()
                await asyncio.gather(retention, return_exceptions=True)
            await engine.close()
            if telemetry is not None:
                telemetry.close()  # the completions still being scrubbed reach the writer
            if writer is not None:
                writer.close()  # flushes every queued completion and event

    app = FastAPI(title="codeloop", version="0.1.0", lifespan=lifespan, responses=refusals({422: {"model": Error}}, HOST_REFUSALS))
    app.add_middleware(RequestBodyGuard, max_bytes=settings.max_request_bytes)
    # Before the body is read, after the request is counted: web pages are refused first.
    app.add_middleware(BrowserGuard, policy=host_policy)
    # Pure ASGI (not @app.middleware): BaseHTTPMiddleware hides client disconnects from routes.
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.state.engine, app.state.registry, app.state.metrics = engine, registry, metrics
    app.state.data_dir = settings.data_dir  # where forget and retention look for copies of telemetry
    app.state.telemetry = app.state.experiments = app.state.reviews = None
    app.state.tokens = TokenStore(settings.auth_tokens_path)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    share = settings.rate_limit_users_per_address  # auth off: a client address's bucket (server/ratelimit.py)
    app.state.address_limiter = RateLimiter(settings.rate_limit_per_minute * share, settings.rate_limit_burst * share)
    for module in (completions_api, adapters_api, telemetry_api, experiments_api, reviews_api, privacy_api):
        # Every /v1 route needs a token once auth is on; admin routes say so themselves.
        app.include_router(module.router, dependencies=[Depends(require_user)], responses=USER_RESPONSES)
    app.include_router(reviews_api.pages)  # GET /review/{id}: the page asks for a token itself
    _install_error_handlers(app)

    @app.get("/healthz")
    async def healthz(request: Request):
        telemetry = request.app.state.telemetry
        writer_status = telemetry.writer.status() if telemetry else None
        # vllm-remote: each replica, up or down (a down one is degraded service, not an outage).
        replicas = engine.replica_status() if hasattr(engine, "replica_status") else None
        healthy = (writer_status is None or writer_status["healthy"]) and all(r["up"] for r in replicas or [])
        template = request.app.state.service.template_for(registry.live)
        return {
            "status": "ok" if healthy else "degraded",
            "model": engine.model_name,
            "engine": choice.name,
            "engine_reason": choice.reason,
            "live_adapter": registry.live,
            "adapters": engine.adapters(),
            "queue_depth": engine.queue_depth(),
            # What editors' requests get: the live adapter's prompt format, and the largest answer.
            "prompt_template": template.name,
            "uses_suffix": template.supports_suffix,
            **({"notes": [PREFIX_ONLY_NOTE]} if not template.supports_suffix else {}),
            "max_tokens_limit": settings.max_tokens_limit,
            "auth": request.app.state.tokens.enabled,  # whether /v1 routes need a token
            **({"replicas": replicas} if replicas is not None else {}),
            "telemetry": writer_status,
            "uptime_s": round(time.time() - app.state.started_at, 1),
        }

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
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
        # The page is only a shell that fetches /v1 (with the token it asks for); with auth on it
        # carries no data of its own.
        locked = app.state.tokens.enabled
        return render_home(engine.model_name, choice.name, None if locked else adapter_list(registry))

    return app


def _announce_exposure(settings, tokens: TokenStore, policy: HostPolicy) -> None:
    """Say at start who can reach the API: the address it binds and whether it needs tokens."""
    local = settings.local_only
    where = f"{settings.host}:{settings.port} ({'this machine only' if local else 'REACHABLE FROM OTHER MACHINES'})"
    if tokens.enabled:
        log.info("listening on %s; auth ON: %d active token(s) in %s", where, tokens.active_count(), tokens.path)
    else:
        (log.info if local else log.warning)(
            "listening on %s; auth OFF: anyone who can reach it may use the API (`codeloop token create` turns auth on)", where)
    if not local:  # a client that uses another name gets 400 (server/browser_guard.py)
        log.info("clients may reach it by IP address or as %s (setting allowed_hosts adds names)", policy.describe())


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

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError):  # adapters, experiments, events
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        headers = None if exc.retry_after is None else {"Retry-After": retry_after_header(exc.retry_after)}
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(EngineBusy)
    async def engine_busy(request: Request, exc: EngineBusy):
        return JSONResponse({"error": str(exc)}, status_code=429, headers={"Retry-After": "1"})

    @app.exception_handler(EngineError)
    async def engine_error(request: Request, exc: EngineError):
        return JSONResponse({"error": f"the engine failed: {exc}"}, status_code=503)
