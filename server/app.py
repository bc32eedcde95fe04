"""The FastAPI application: routes only; the work is in completions.py and adapters.py."""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response

from server.adapters import AdapterError, AdapterRegistry
from server.completions import CompletionService, RequestError
from server.dashboard import render_home
from server.engines import Engine, EngineBusy, EngineError, make_engine
from server.limits import RequestBodyGuard
from server.metrics import RequestMetrics, ServerMetrics
from server.schemas import AdapterInfo, AdapterList, AdapterLoad, CompletionRequest, CompletionResponse, Error

log = logging.getLogger("codeloop.server")
DISCONNECT_POLL_S = 0.05


def create_app(settings, model_dir: Path, engine: Engine | None = None) -> FastAPI:
    """`settings` is codeloop's Settings (any object with the same attributes will do)."""
    engine = engine or make_engine(settings.engine, model_dir, max_queue=settings.max_queue, torch_threads=settings.torch_threads)
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
        await engine.start()
        for problem in await registry.restore():
            log.warning(problem)
        app.state.service = CompletionService(engine, registry, metrics, settings)
        app.state.started_at = time.time()
        yield
        await engine.close()

    app = FastAPI(title="codeloop", version="0.1.0", lifespan=lifespan, responses={422: {"model": Error}})
    app.add_middleware(RequestBodyGuard, max_bytes=settings.max_request_bytes)
    app.state.engine, app.state.registry, app.state.metrics = engine, registry, metrics

    # Pure ASGI (not @app.middleware): BaseHTTPMiddleware hides client disconnects from routes.
    app.add_middleware(RequestMetrics, metrics=metrics)
    _install_error_handlers(app)

    @app.post("/v1/completions", response_model=CompletionResponse, responses={404: {"model": Error}, 429: {"model": Error}})
    async def create_completion(body: CompletionRequest, request: Request):
        # The engine work runs as a task so that a client that hangs up cancels it: the
        # engine then stops within a token or two instead of finishing for nobody.
        task = asyncio.create_task(app.state.service.complete(body))
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                return Response(status_code=499)

    @app.get("/v1/adapters", response_model=AdapterList)
    async def list_adapters():
        return _adapter_list(registry, engine)

    @app.post("/v1/adapters", response_model=AdapterInfo, status_code=201, responses={403: {"model": Error}, 404: {"model": Error}, 409: {"model": Error}})
    async def load_adapter(body: AdapterLoad):
        started = time.monotonic()
        try:
            record = await registry.register(body.name, body.path)
        except AdapterError:
            metrics.adapter_loads.labels("refused").inc()
            raise
        metrics.adapter_loads.labels("loaded").inc()
        metrics.adapter_load_seconds.observe(time.monotonic() - started)
        return AdapterInfo(**record.__dict__, live=False)

    @app.post("/v1/adapters/{name}/promote", response_model=AdapterList)
    async def promote_adapter(name: str):
        await registry.promote(name)
        return _adapter_list(registry, engine)

    @app.delete("/v1/adapters/{name}", response_model=AdapterList)
    async def delete_adapter(name: str):
        await registry.unload(name)
        return _adapter_list(registry, engine)

    @app.get("/healthz")
    async def healthz():
        return {
            "status": "ok",
            "model": engine.model_name,
            "engine": settings.engine,
            "live_adapter": registry.live,
            "adapters": engine.adapters(),
            "queue_depth": engine.queue_depth(),
            "uptime_s": round(time.time() - app.state.started_at, 1),
        }

    @app.get("/metrics")
    async def prometheus_metrics():
        for n in engine.cancel_stats.drain():
            metrics.tokens_after_cancel.observe(n)
        metrics.queue_depth.set(engine.queue_depth())
        metrics.adapters_loaded.set(len(engine.adapters()))
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse)
    async def home():
        return render_home(engine.model_name, settings.engine, _adapter_list(registry, engine))

    return app


def _adapter_list(registry: AdapterRegistry, engine: Engine) -> AdapterList:
    infos = [AdapterInfo(**r.__dict__, live=r.name == registry.live) for r in registry.records.values()]
    return AdapterList(base_model=engine.model_name, live=registry.live, adapters=infos)


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
