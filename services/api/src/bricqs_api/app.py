"""The api service: `create_app(settings)` builds the Litestar app (OpenAPI at /schema)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components
from psycopg_pool import AsyncConnectionPool

from bricqs.auth import KeyCache
from bricqs.mechanics.cache import RuleCache
from bricqs.participant_tokens import ParticipantTokens
from bricqs.redis_connect import connect_redis
from bricqs.settings import load_or_exit
from bricqs.storage.health import ping
from bricqs.storage.pools import database_pool
from bricqs.storage.tenants import KeyOwner, find_key_owner, projects_by_origin
from bricqs.web.auth import SECURITY_SCHEMES
from bricqs.web.cors import ProjectOrigins, participant_cors
from bricqs.web.health import Check, health_router
from bricqs.web.metrics import mark_worker_dead, metrics_endpoint, request_metrics
from bricqs.web.problems import exception_handlers
from bricqs_api.actions import ManualActionController
from bricqs_api.backfill import backfill_controllers
from bricqs_api.catalog import CatalogController
from bricqs_api.console import console_routes
from bricqs_api.context import DEPENDENCIES, ApiClients, cors_context, scope_guard
from bricqs_api.data_rights import ParticipantDataController
from bricqs_api.definitions import definition_controllers
from bricqs_api.leaderboards import LeaderboardController
from bricqs_api.participant_tokens import ParticipantTokenController
from bricqs_api.participants import ParticipantAttributesController, ParticipantController
from bricqs_api.rewards import reward_controllers
from bricqs_api.settings import ApiSettings
from bricqs_api.streaks import StreakAdminController
from bricqs_api.webhooks import WebhookController


def _pool(settings: ApiSettings, url: str, name: str) -> AsyncConnectionPool[Any]:
    return database_pool(
        url,
        name=name,
        max_size=settings.database_pool_size,
        statement_timeout_ms=settings.database_timeout_ms,
        transaction_pooling=settings.database_transaction_pooling,
        wait_timeout_ms=settings.database_timeout_ms,
    )


def _clients(settings: ApiSettings) -> ApiClients:
    pool = _pool(settings, settings.database_url, "api")
    read_pool = pool
    if settings.database_read_url:  # else reads share the primary's pool
        read_pool = _pool(settings, settings.database_read_url, "api-reads")
    redis = connect_redis(settings.redis_url, cluster=settings.redis_cluster, timeout_s=1.0)

    async def lookup(key_hash: bytes) -> KeyOwner | None:
        async with pool.connection() as conn:
            return await find_key_owner(conn, key_hash)

    async def origins() -> dict[str, frozenset[str]]:
        async with pool.connection() as conn:
            return await projects_by_origin(conn)

    return ApiClients(
        settings,
        pool,
        read_pool,
        redis,
        KeyCache(lookup, ttl=settings.auth_cache_ttl_seconds),
        RuleCache(settings.rules_refresh_seconds),
        ParticipantTokens(settings.participant_token_secret),
        ProjectOrigins(origins, settings.auth_cache_ttl_seconds),
    )


def _readiness(clients: ApiClients) -> dict[str, Check]:
    async def postgres() -> None:
        async with clients.pool.connection(timeout=2) as conn:
            await ping(conn)

    return {"postgres": postgres, "redis": clients.redis.ping}


def create_app(settings: ApiSettings | None = None) -> Litestar:
    """Build the api app; clients are made in the lifespan, one set per worker."""
    settings = settings or load_or_exit(ApiSettings)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        clients = _clients(settings)
        for pool in clients.pools():
            await pool.open(wait=False)
        app.state.clients = clients
        try:
            yield
        finally:
            await clients.redis.aclose()
            for pool in clients.pools():
                await pool.close()
            mark_worker_dead()

    # Every route below declares its scope on its controller; the guard enforces it.
    api = Router(
        path="/api/v1",
        guards=[scope_guard],
        route_handlers=[
            Router(
                path="/gamify",
                route_handlers=[
                    *definition_controllers,
                    ParticipantController,
                    ParticipantAttributesController,
                    ParticipantDataController,
                    ParticipantTokenController,
                    ManualActionController,
                    LeaderboardController,
                    StreakAdminController,
                    WebhookController,
                    *reward_controllers,
                    *backfill_controllers,
                ],
            ),
            CatalogController,
        ],
    )
    app = Litestar(
        # The health router asks for its checks per request, once the lifespan has run.
        route_handlers=[
            api,
            health_router(lambda: _readiness(app.state.clients)),
            metrics_endpoint,
            *console_routes(settings),
        ],
        dependencies=DEPENDENCIES,
        exception_handlers=exception_handlers,
        middleware=[request_metrics("api"), participant_cors(cors_context)],
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="Bricqs gamification API",
            version="1.0.0",
            components=Components(security_schemes=dict(SECURITY_SCHEMES)),
        ),
        # Definitions and actions are small; nothing legitimate comes near 1 MiB.
        request_max_body_size=1024 * 1024,
        debug=False,
    )
    return app
