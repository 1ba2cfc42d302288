"""Projects and API keys, and the tenant: the (project, environment) that scopes mechanics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from psycopg import AsyncConnection

from bricqs.ids import ulid
from bricqs.keys import Environment, display_prefix, generate_key, hash_key

Conn = AsyncConnection[Any]

Scope = Literal["ingest", "read", "write", "admin", "import"]
"""What a key may do: send events; read state, leaderboards and the catalog; award,
deduct, set attributes and claim rewards for participants; change definitions and run
operations; send historical imports only (docs/import.md)."""
SCOPES: tuple[Scope, ...] = get_args(Scope)


@dataclass(frozen=True)
class Tenant:
    """A (project, environment) pair: the scope of every query of the mechanics."""

    project_id: str
    environment: str


@dataclass(frozen=True)
class Project:
    """A tenant."""

    project_id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    """A stored key (never its plaintext)."""

    key_id: str
    project_id: str
    environment: Environment
    display_prefix: str
    created_at: datetime
    revoked_at: datetime | None
    scopes: tuple[Scope, ...]


@dataclass(frozen=True)
class KeyOwner:
    """Who a presented key belongs to, what it may do, and the project's own ingest
    limits (None: defaults)."""

    project_id: str
    environment: Environment
    key_id: str = ""
    rate_limit_per_second: float | None = None
    rate_limit_burst: int | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    participant_id: str | None = None
    """Set when the caller holds a participant token: it acts for this participant only."""


async def create_project(conn: AsyncConnection[Any], name: str) -> Project:
    """Create a project named `name`."""
    cursor = await conn.execute(
        "INSERT INTO projects (project_id, name) VALUES (%s, %s) RETURNING created_at",
        (project_id := "prj_" + ulid(), name),
    )
    row = await cursor.fetchone()
    assert row is not None
    return Project(project_id, name, row[0])


async def list_projects(conn: AsyncConnection[Any]) -> list[Project]:
    """Every project, oldest first."""
    cursor = await conn.execute(
        "SELECT project_id, name, created_at FROM projects ORDER BY created_at"
    )
    return [Project(*row) for row in await cursor.fetchall()]


async def find_project(conn: AsyncConnection[Any], project: str) -> Project | None:
    """A project by id, or by name when the name is unique."""
    cursor = await conn.execute(
        "SELECT project_id, name, created_at FROM projects WHERE project_id = %s OR name = %s"
        " ORDER BY created_at",
        (project, project),
    )
    rows = await cursor.fetchall()
    by_id = [r for r in rows if r[0] == project]
    if by_id:
        return Project(*by_id[0])
    return Project(*rows[0]) if len(rows) == 1 else None


async def create_key(
    conn: AsyncConnection[Any],
    project_id: str,
    environment: Environment,
    *,
    scopes: Iterable[Scope],
) -> tuple[ApiKey, str]:
    """Mint a key that may do `scopes`; return the stored record and the plaintext (shown
    once, never stored)."""
    granted = tuple(s for s in SCOPES if s in set(scopes))
    if not granted:
        raise ValueError("a key needs at least one scope")
    plaintext = generate_key(environment)
    cursor = await conn.execute(
        "INSERT INTO api_keys (key_id, project_id, environment, key_hash, display_prefix,"
        " scopes) VALUES (%s, %s, %s, %s, %s, %s) RETURNING created_at",
        (
            key_id := "key_" + ulid(),
            project_id,
            environment,
            hash_key(plaintext),
            prefix := display_prefix(plaintext),
            list(granted),
        ),
    )
    row = await cursor.fetchone()
    assert row is not None
    return ApiKey(key_id, project_id, environment, prefix, row[0], None, granted), plaintext


async def revoke_key(conn: AsyncConnection[Any], key_id: str) -> bool:
    """Revoke a key by id; False when no such active key exists."""
    cursor = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL",
        (key_id,),
    )
    return cursor.rowcount == 1


async def list_keys(conn: AsyncConnection[Any], project_id: str) -> list[ApiKey]:
    """Every key of a project, oldest first."""
    cursor = await conn.execute(
        "SELECT key_id, project_id, environment, display_prefix, created_at, revoked_at,"
        " scopes FROM api_keys WHERE project_id = %s ORDER BY created_at",
        (project_id,),
    )
    return [
        ApiKey(key_id, project, environment, prefix, created, revoked, tuple(scopes))
        for key_id, project, environment, prefix, created, revoked, scopes in (
            await cursor.fetchall()
        )
    ]


async def find_key_owner(conn: AsyncConnection[Any], key_hash: bytes) -> KeyOwner | None:
    """The owner of an active key with this hash, or None (unknown or revoked)."""
    cursor = await conn.execute(
        "SELECT k.project_id, k.environment, k.key_id, p.rate_limit_per_second,"
        " p.rate_limit_burst, k.scopes FROM api_keys k JOIN projects p USING (project_id)"
        " WHERE k.key_hash = %s AND k.revoked_at IS NULL",
        (key_hash,),
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    project, environment, key_id, per_second, burst, scopes = row
    return KeyOwner(project, environment, key_id, per_second, burst, frozenset(scopes))


async def set_rate_limit(
    conn: AsyncConnection[Any], project_id: str, per_second: float | None, burst: int | None
) -> bool:
    """Set (or, with None, reset to the defaults) a project's ingest rate limit."""
    cursor = await conn.execute(
        "UPDATE projects SET rate_limit_per_second = %s, rate_limit_burst = %s"
        " WHERE project_id = %s",
        (per_second, burst, project_id),
    )
    return cursor.rowcount == 1


async def set_cors_origins(conn: AsyncConnection[Any], project_id: str, origins: list[str]) -> bool:
    """Set the browser origins allowed to call a project's participant-token routes
    (empty: none, the default)."""
    cursor = await conn.execute(
        "UPDATE projects SET cors_origins = %s WHERE project_id = %s", (origins, project_id)
    )
    return cursor.rowcount == 1


async def projects_by_origin(conn: AsyncConnection[Any]) -> dict[str, frozenset[str]]:
    """Every allowed origin, with the projects that allow it."""
    cursor = await conn.execute(
        "SELECT origin, array_agg(project_id) FROM projects, unnest(cors_origins) AS origin"
        " GROUP BY origin"
    )
    return {origin: frozenset(projects) for origin, projects in await cursor.fetchall()}


MIN_RETENTION_DAYS = 7
"""The shortest retention a project may have: longer than a stream entry can wait for a
redelivery or a webhook message for its last attempt (docs/retention.md)."""


async def set_retention(conn: AsyncConnection[Any], project_id: str, days: int | None) -> bool:
    """Set how many days of events and facts a project keeps (None: forever)."""
    if days is not None and days < MIN_RETENTION_DAYS:
        raise ValueError(f"a retention is at least {MIN_RETENTION_DAYS} days")
    cursor = await conn.execute(
        "UPDATE projects SET retention_days = %s WHERE project_id = %s", (days, project_id)
    )
    return cursor.rowcount == 1


async def retentions(conn: AsyncConnection[Any]) -> dict[str, int | None]:
    """Every project's retention in days (None: forever), by project id."""
    cursor = await conn.execute("SELECT project_id, retention_days FROM projects")
    return {project: days for project, days in await cursor.fetchall()}
