"""Prometheus metrics of one server (its own registry, so tests can run several apps)."""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("codeloop_http_requests", "HTTP requests", ["route", "status"], registry=r)
        self.request_seconds = Histogram("codeloop_http_request_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.engine_seconds = Histogram("codeloop_engine_seconds", "time the engine spent on a completion", ["adapter"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("codeloop_queue_seconds", "time a completion waited for the engine", buckets=LATENCY_BUCKETS, registry=r)
        self.first_token_seconds = Histogram("codeloop_time_to_first_token_seconds", "time to the first generated token", buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("codeloop_prompt_tokens", "prompt tokens sent to the engine", registry=r)
        self.completion_tokens = Counter("codeloop_completion_tokens", "tokens generated", ["adapter"], registry=r)
        self.completions = Counter("codeloop_completions", "completions by how they finished", ["adapter", "finish_reason"], registry=r)
        self.tokens_after_cancel = Histogram("codeloop_tokens_after_cancel", "tokens generated after a client went away", buckets=(0, 1, 2, 4, 8, 16, 64), registry=r)
        self.adapter_loads = Counter("codeloop_adapter_loads", "adapter registrations", ["result"], registry=r)
        self.adapter_load_seconds = Histogram("codeloop_adapter_load_seconds", "time to validate, hash and load an adapter", buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("codeloop_engine_queue_depth", "requests waiting for the engine", registry=r)
        self.events = Counter("codeloop_events", "telemetry events received and stored", registry=r)
        self.writer_queued = Gauge("codeloop_telemetry_queued", "rows waiting for the telemetry writer", ["table"], registry=r)
        self.writer_written = Gauge("codeloop_telemetry_written", "rows the telemetry writer has committed", ["table"], registry=r)
        self.writer_healthy = Gauge("codeloop_telemetry_healthy", "1 when the last telemetry commit succeeded", registry=r)
        self.adapters_loaded = Gauge("codeloop_adapters_loaded", "adapters loaded in the engine", registry=r)

    def observe_writer(self, status: dict) -> None:
        for table in ("completions", "events"):
            self.writer_queued.labels(table).set(status[f"queued_{table}"])
            self.writer_written.labels(table).set(status[f"written_{table}"])
        self.writer_healthy.set(1 if status["healthy"] else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware counting requests by route template and status, and timing them."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status = 500

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_seconds.labels(route).observe(time.monotonic() - started)
