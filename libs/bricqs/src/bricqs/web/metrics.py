"""Prometheus metrics that stay correct with several worker processes.

When `PROMETHEUS_MULTIPROC_DIR` is set (the launcher sets it and wipes the folder first),
prometheus-client keeps each process's values in mmap files and `/metrics` merges them;
each worker marks itself dead at exit. In Kubernetes run one worker per pod instead.
"""

from __future__ import annotations

import os
import time
from typing import Any

from litestar import Response, get
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

# Buckets chosen around the 50 ms SLO, fine below it where ingest lives.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

REQUEST_LATENCY = Histogram(
    "bricqs_http_request_duration_seconds",
    "HTTP request latency by service, route template, method and status.",
    ["service", "route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)

DATABASE_OVERLOADED = Counter(
    "bricqs_database_overloaded_total",
    "Requests answered 503 database_overloaded: a statement ran past statement_timeout.",
)


def multiprocess_enabled() -> bool:
    """Whether metrics are shared across worker processes through files."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def render_metrics() -> bytes:
    """The exposition text of this process (or of all workers, in multiprocess mode)."""
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))
    return bytes(generate_latest(REGISTRY))


def mark_worker_dead() -> None:
    """Tell the multiprocess collector this worker's live gauges are gone."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics_endpoint() -> Response[bytes]:
    """Prometheus scrape endpoint."""
    return Response(render_metrics(), media_type=CONTENT_TYPE_LATEST)


def request_metrics(service: str) -> Any:
    """ASGI middleware factory observing latency per route template and status."""

    # The labelled child per (route, method, status), so a request does one dict lookup
    # instead of prometheus-client's locked `labels()` resolution.
    children: dict[tuple[str, str, int], Any] = {}

    def middleware(app: ASGIApp) -> ASGIApp:
        async def observe(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500

            async def send_and_capture(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_and_capture)
            finally:
                key = (scope.get("path_template") or "unmatched", scope.get("method", ""), status)
                child = children.get(key)
                if child is None:
                    child = children[key] = REQUEST_LATENCY.labels(service, *key[:2], str(status))
                child.observe(time.perf_counter() - started)

        return observe

    return middleware
