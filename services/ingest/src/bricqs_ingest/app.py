"""The ingest service: `create_app(settings)` builds the Litestar app.

Routes (base path /api/v1): POST /ingest/events (async; `single`, with its fast path in
`fast_path`), /ingest/events/batch (async, 1-100 events; `batch`), /ingest/events/sync
(processed in-process before answering; `sync`). INGEST_ENDPOINTS narrows a process to
the async routes or to sync alone (the others are 404 there), so sync events, which run
the mechanics on the worker's loop, can be served by processes of their own. The clients
one worker shares are made in the lifespan and kept on `app.state.ingest`
(`context.IngestContext`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Router
from litestar.di import Provide

from bricqs.auth import KeyCache
from bricqs.mechanics.cache import RuleCache
from bricqs.participant_tokens import ParticipantTokens
from bricqs.redis_connect import connect_redis
from bricqs.runtime import tune_garbage_collector
from bricqs.settings import load_or_exit
from bricqs.storage.pools import database_pool
from bricqs.storage.tenants import KeyOwner, find_key_owner, projects_by_origin
from bricqs.web.cors import ProjectOrigins, participant_cors
from bricqs.web.health import health_router
from bricqs.web.metrics import mark_worker_dead, metrics_endpoint, request_metrics
from bricqs.web.problems import exception_handlers
from bricqs_ingest.backlog import BacklogMonitor
from bricqs_ingest.batch import ingest_batch
from bricqs_ingest.context import INGEST_SECURITY, IngestContext, cors_context, ingest_context
from bricqs_ingest.fast_path import single_event_fast_path
from bricqs_ingest.openapi import openapi_document
from bricqs_ingest.publisher import StreamPublisher
from bricqs_ingest.settings import IngestSettings
from bricqs_ingest.single import ingest_event
from bricqs_ingest.sync import ingest_sync


def create_app(settings: IngestSettings | None = None) -> Litestar:
    """Build the ingest app; clients are made in the lifespan, one set per worker."""
    settings = settings or load_or_exit(IngestSettings)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        ctx = await _open_context(settings)
        app.state.ingest = ctx
        ctx.backlog.start()
        tune_garbage_collector()
        try:
            yield
        finally:
            await ctx.backlog.stop()
            await ctx.publisher.close()
            await ctx.redis.aclose()
            await ctx.pool.close()
            mark_worker_dead()

    def checks() -> dict[str, Any]:
        # Only Redis: the async endpoints need nothing else (keys are cached), so a
        # PostgreSQL outage must not take ingest pods out of their Service. The sync
        # endpoint answers 503 database_unavailable by itself meanwhile.
        return {"redis": ingest_context(app.state).redis.ping}

    served = {
        "all": [ingest_event, ingest_batch, ingest_sync],
        "async": [ingest_event, ingest_batch],
        "sync": [ingest_sync],
    }[settings.ingest_endpoints]
    api = Router(
        path="/api/v1",
        route_handlers=served,
        security=INGEST_SECURITY,
    )
    # The fast path answers POST /ingest/events itself: only where that route is served.
    fast_path = [] if settings.ingest_endpoints == "sync" else [single_event_fast_path]
    app = Litestar(
        route_handlers=[api, health_router(checks), metrics_endpoint, openapi_document],
        dependencies={"ctx": Provide(ingest_context, sync_to_thread=False)},
        exception_handlers=exception_handlers,
        # CORS inside the fast path: the plain case (an API key) never needs it.
        middleware=[
            request_metrics("ingest"),
            *fast_path,
            participant_cors(cors_context),
        ],
        lifespan=[lifespan],
        openapi_config=None,
        debug=False,
    )
    return app


async def _open_context(settings: IngestSettings) -> IngestContext:
    timeout = settings.redis_timeout_ms / 1000
    # One server: no automatic retries (clients retry, with idempotency keys, when we
    # answer 503). A cluster: failovers are retried within the publisher's deadline.
    redis = connect_redis(settings.redis_url, cluster=settings.redis_cluster, timeout_s=timeout)
    pool = database_pool(
        settings.database_url,
        name="ingest",
        max_size=settings.database_pool_size,
        statement_timeout_ms=settings.database_timeout_ms,
        transaction_pooling=settings.database_transaction_pooling,
    )
    await pool.open(wait=False)

    async def lookup(key_hash: bytes) -> KeyOwner | None:
        async with pool.connection(timeout=settings.database_timeout_ms / 1000) as conn:
            return await find_key_owner(conn, key_hash)

    async def origins() -> dict[str, frozenset[str]]:
        async with pool.connection(timeout=settings.database_timeout_ms / 1000) as conn:
            return await projects_by_origin(conn)

    return IngestContext(
        settings,
        redis,
        pool,
        StreamPublisher(
            redis,
            timeout=timeout,
            idempotency_ttl=settings.idempotency_ttl_seconds,
            max_inflight=settings.max_inflight_pipelines,
        ),
        KeyCache(
            lookup,
            ttl=settings.auth_cache_ttl_seconds,
            negative_ttl=settings.auth_negative_ttl_seconds,
        ),
        RuleCache(settings.rules_refresh_seconds),
        ParticipantTokens(settings.participant_token_secret),
        ProjectOrigins(origins, settings.auth_cache_ttl_seconds),
        BacklogMonitor(
            redis,
            shards=settings.stream_shards,
            previous_shards=settings.stream_shards_previous,
            limit=settings.max_backlog,
            interval=settings.backlog_check_ms / 1000,
            historical_limit=settings.historical_max_backlog,
        ),
    )
