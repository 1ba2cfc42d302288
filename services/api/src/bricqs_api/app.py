"""The api service: `create_app(settings)` builds the Litestar app (OpenAPI at /schema)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from bricqs.auth import KeyCache
from bricqs.mechanics.cache import RuleCache
from bricqs.settings import load_or_exit
from bricqs.storage.tenants import KeyOwner, find_key_owner
from bricqs.web.health import health_router
from bricqs.web.metrics import mark_worker_dead, metrics_endpoint, request_metrics
from bricqs.web.problems import exception_handlers
from bricqs_api.context import ApiContext, provide_tenant
from bricqs_api.definitions import definition_routers
from bricqs_api.leaderboards import catalog_router, gamify_router
from bricqs_api.participants import participant_router
from bricqs_api.settings import ApiSettings


def create_app(settings: ApiSettings | None = None) -> Litestar:
    """Build the api app; clients are made in the lifespan, one set per worker."""
    settings = settings or load_or_exit(ApiSettings)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    holder: dict[str, ApiContext] = {}

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=settings.database_pool_size,
            kwargs={"options": f"-c statement_timeout={settings.database_timeout_ms}"},
            timeout=settings.database_timeout_ms / 1000,
            open=False,
        )
        await pool.open(wait=False)
        redis = Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)

        async def lookup(key_hash: bytes) -> KeyOwner | None:
            async with pool.connection() as conn:
                return await find_key_owner(conn, key_hash)

        holder["ctx"] = ApiContext(
            settings,
            pool,
            redis,
            KeyCache(lookup, ttl=settings.auth_cache_ttl_seconds),
            RuleCache(settings.rules_refresh_seconds),
        )
        try:
            yield
        finally:
            await redis.aclose()
            await pool.close()
            mark_worker_dead()

    def context() -> ApiContext:
        return holder["ctx"]

    def checks() -> dict[str, Any]:
        ctx = holder["ctx"]

        async def postgres() -> None:
            async with ctx.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")

        return {"postgres": postgres, "redis": ctx.redis.ping}

    authenticated = {"tenant": Provide(provide_tenant)}
    api = Router(
        path="/api/v1",
        route_handlers=[
            Router(
                path="/gamify",
                route_handlers=[*definition_routers, participant_router, gamify_router],
            ),
            catalog_router,
        ],
        dependencies=authenticated,
    )
    return Litestar(
        route_handlers=[api, health_router(checks), metrics_endpoint],
        dependencies={"ctx": Provide(context, sync_to_thread=False)},
        exception_handlers=exception_handlers,
        middleware=[request_metrics("api")],
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="Bricqs gamification API", version="1.0.0"),
        # Definitions and actions are small; nothing legitimate comes near 1 MiB.
        request_max_body_size=1024 * 1024,
        debug=False,
    )
