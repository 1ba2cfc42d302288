"""What every api request can reach: clients made in the lifespan, and the caller's tenant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from bricqs.auth import KeyCache
from bricqs.mechanics.cache import RuleCache
from bricqs.storage.tenants import Tenant
from bricqs.web.auth import authenticate
from bricqs.web.problems import problem_responses
from bricqs_api.settings import ApiSettings

# Path and query values reach SQL as bound parameters; these patterns keep out what
# PostgreSQL text cannot hold (NUL) and what ids never contain, as 400s, not 500s.
ParticipantPath = Annotated[
    str, PathParameter(pattern=r"^[^\x00-\x1f\x7f]{1,255}$", description="Your participant id")
]
CodePath = Annotated[str, PathParameter(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]
Cursor = Annotated[str | None, QueryParameter(pattern=r"^[A-Za-z0-9_]{1,64}$")]
FactTypeQuery = Annotated[
    str | None, QueryParameter(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,119}$")
]

# The problem answers any api route may give, for the OpenAPI document.
PROBLEMS = problem_responses(400, 401, 404, 405, 409, 413, 422, 503)


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
