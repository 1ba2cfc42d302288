"""What every api request can reach: clients made in the lifespan, and the caller's tenant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from bricqs.auth import KeyCache
from bricqs.mechanics.cache import RuleCache
from bricqs.storage.mechanics import Tenant
from bricqs.web.auth import authenticate
from bricqs_api.settings import ApiSettings


@dataclass
class ApiContext:
    """Clients shared by the requests of one worker process."""

    settings: ApiSettings
    pool: AsyncConnectionPool
    redis: Redis
    keys: KeyCache
    rules: RuleCache


async def provide_tenant(
    request: Request[Any, Any, Any], ctx: NamedDependency[ApiContext]
) -> Tenant:
    """The (project, environment) of the request's API key."""
    owner = await authenticate(request, ctx.keys, ctx.settings.retry_after_seconds)
    return Tenant(owner.project_id, owner.environment)
