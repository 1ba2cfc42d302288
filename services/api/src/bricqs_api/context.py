"""What api handlers take by dependency injection: the worker's clients (made in the
lifespan, kept on `app.state`), a pooled connection, the caller's tenant and its rules.

Controllers whose reads a streaming standby may answer declare `dependencies = READS`:
their `conn`, and the rules and participant built on it, come from the read pool
(`DATABASE_READ_URL`), so they may lag the primary by the standby's replay delay.
Writes, and reads that must see the caller's own writes, keep the primary's `conn`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

from litestar import Litestar, Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.handlers import BaseRouteHandler
from litestar.params import PathParameter, QueryParameter
from psycopg_pool import AsyncConnectionPool

from bricqs.auth import KeyCache
from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.ruleset import RuleSet
from bricqs.mechanics.state import (
    badges_state,
    challenges_state,
    points_state,
    streaks_state,
    tiers_state,
)
from bricqs.participant_tokens import ParticipantTokens
from bricqs.redis_connect import RedisClient
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Conn, KeyOwner, Tenant
from bricqs.web.auth import authenticate
from bricqs.web.cors import ProjectOrigins
from bricqs.web.problems import problem_responses
from bricqs_api.settings import ApiSettings

# Path and query values reach SQL as bound parameters; these patterns keep out what
# PostgreSQL text cannot hold (NUL) and what ids never contain, as 400s, not 500s.
ParticipantPath = Annotated[
    str, PathParameter(pattern=r"^[^\x00-\x1f\x7f]{1,255}$", description="Your participant id")
]
CodePath = Annotated[str, PathParameter(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]
Cursor = Annotated[str | None, QueryParameter(pattern=r"^[A-Za-z0-9_]{1,64}$")]
Limit = Annotated[int, QueryParameter(ge=1, le=200)]
FactTypeQuery = Annotated[
    str | None, QueryParameter(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,119}$")
]

# The problem answers any api route may give, for the OpenAPI document.
PROBLEMS = problem_responses(400, 401, 403, 404, 405, 409, 413, 422, 503)


@dataclass
class ApiClients:
    """Clients shared by the requests of one worker process, at `app.state.clients`."""

    settings: ApiSettings
    pool: AsyncConnectionPool
    read_pool: AsyncConnectionPool
    """The standby's pool with DATABASE_READ_URL, else the primary's (`pool`)."""
    redis: RedisClient
    keys: KeyCache
    rules: RuleCache
    tokens: ParticipantTokens
    origins: ProjectOrigins

    def pools(self) -> list[AsyncConnectionPool]:
        """Every pool, each once: to open and close them."""
        return [self.pool] if self.read_pool is self.pool else [self.pool, self.read_pool]


def provide_clients(state: State) -> ApiClients:
    """The worker's clients, made in the lifespan."""
    clients: ApiClients = state.clients
    return clients


async def scope_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Lets in only callers the route's declared scope allows (see `bricqs.web.auth`);
    runs before any dependency, so a refused request holds no connection."""
    del handler  # the connection knows its route
    clients = provide_clients(connection.app.state)
    connection.state.caller = await authenticate(
        connection, clients.keys, clients.settings.retry_after_seconds, clients.tokens
    )


def cors_context(app: Litestar) -> tuple[ProjectOrigins, ParticipantTokens]:
    """What the CORS middleware needs of the worker's clients."""
    clients = provide_clients(app.state)
    return clients.origins, clients.tokens


def provide_caller(request: Request[Any, Any, Any]) -> KeyOwner:
    """The key (or participant token) the scope guard let in."""
    caller: KeyOwner = request.state.caller
    return caller


def provide_tenant(caller: NamedDependency[KeyOwner]) -> Tenant:
    """The (project, environment) of the request's caller."""
    return Tenant(caller.project_id, caller.environment)


async def provide_connection(clients: NamedDependency[ApiClients]) -> AsyncIterator[Conn]:
    """A pooled connection for the request: committed after the handler returns, rolled
    back when it raises.

    The key is checked before (by the scope guard): a key lookup may need a pooled
    connection of its own, and requests holding one while waiting for another could
    drain the pool; nor does a request with a bad key hold one.
    """
    async with clients.pool.connection() as conn:
        yield conn


async def provide_read_connection(clients: NamedDependency[ApiClients]) -> AsyncIterator[Conn]:
    """A pooled connection of the read pool, for the controllers declaring `READS`."""
    async with clients.read_pool.connection() as conn:
        yield conn


async def provide_rules(
    clients: NamedDependency[ApiClients],
    conn: NamedDependency[Conn],
    tenant: NamedDependency[Tenant],
) -> RuleSet:
    """The tenant's compiled rules, from the worker's cache."""
    return await clients.rules(conn, tenant)


@dataclass(frozen=True)
class ParticipantView:
    """One participant of the caller's tenant as the request reads it: in the request's
    connection, with the tenant's rules, as of the request's start."""

    conn: Conn
    tenant: Tenant
    rules: RuleSet
    participant_id: str
    now: datetime

    async def points(self) -> dict[str, Any]:
        """Balance and lifetime totals."""
        return await points_state(self.conn, self.tenant, self.participant_id, self.now)

    async def badges(self) -> dict[str, Any]:
        """Earned badges, and the active ones not yet earned with their progress."""
        return await badges_state(*self._scope())

    async def challenges(self) -> list[dict[str, Any]]:
        """Every active challenge with per-objective progress."""
        return await challenges_state(*self._scope())

    async def streaks(self) -> list[dict[str, Any]]:
        """Every active streak with its runs."""
        return await streaks_state(*self._scope())

    async def tiers(self) -> list[dict[str, Any]]:
        """The level on each tier ladder."""
        return await tiers_state(self.conn, self.tenant, self.rules, self.participant_id)

    def _scope(self) -> tuple[Conn, Tenant, RuleSet, str, datetime]:
        """What the reads that judge criteria take, in their order."""
        return self.conn, self.tenant, self.rules, self.participant_id, self.now


async def provide_participant(
    participant_id: ParticipantPath,
    conn: NamedDependency[Conn],
    tenant: NamedDependency[Tenant],
    rules: NamedDependency[RuleSet],
) -> ParticipantView:
    """The participant named in the path."""
    return ParticipantView(conn, tenant, rules, participant_id, datetime.now(UTC))


@dataclass(frozen=True)
class PageRequest:
    """Which page of a newest-first history the request asks for."""

    after: str | None
    """The cursor: the id of the last item of the previous page."""
    limit: int

    def answer(self, rows: Sequence[NamedTuple], cursor_field: str) -> dict[str, Any]:
        """The page of `rows` (read with `limit + 1`, to know whether more follow), with
        the cursor of the next page when there is one."""
        items = [row._asdict() for row in rows[: self.limit]]
        more = len(rows) > self.limit
        return {"items": items, "next_cursor": items[-1][cursor_field] if more else None}


def provide_page(cursor: Cursor = None, limit: Limit = 50) -> PageRequest:
    """The page asked for by `cursor` and `limit`."""
    return PageRequest(cursor, limit)


def provide_rule_cache(clients: NamedDependency[ApiClients]) -> RuleCache:
    """The worker's rule cache, for actions that load rules only when they need them."""
    return clients.rules


def provide_standings(clients: NamedDependency[ApiClients]) -> Standings:
    """The leaderboards' Redis read model, on the worker's Redis client."""
    return Standings(clients.redis)


DEPENDENCIES = {
    "clients": Provide(provide_clients, sync_to_thread=False),
    "conn": Provide(provide_connection),
    "caller": Provide(provide_caller, sync_to_thread=False),
    "tenant": Provide(provide_tenant, sync_to_thread=False),
    "rules": Provide(provide_rules),
    "rule_cache": Provide(provide_rule_cache, sync_to_thread=False),
    "participant": Provide(provide_participant),
    "page": Provide(provide_page, sync_to_thread=False),
    "standings": Provide(provide_standings, sync_to_thread=False),
}

# A controller's `dependencies` for reads a standby may answer: `conn` from the read pool.
READS = {"conn": Provide(provide_read_connection)}

# What handlers declare to receive the dependencies above.
Connection = NamedDependency[Conn]
Caller = NamedDependency[KeyOwner]
CallerTenant = NamedDependency[Tenant]
TenantRules = NamedDependency[RuleSet]
Participant = NamedDependency[ParticipantView]
Page = NamedDependency[PageRequest]
BoardStandings = NamedDependency[Standings]
