"""Definitions of mechanics, and the tenant's definition version that rule caches watch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncCursor

from bricqs.storage.tenants import Conn, Tenant


@dataclass(frozen=True)
class DefinitionRow:
    """A stored definition."""

    kind: str
    code: str
    status: str
    body: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime


async def _written(conn: Conn, tenant: Tenant, cursor: AsyncCursor[Any]) -> DefinitionRow | None:
    """The definition a write returned, after moving the tenant's version (so rule caches
    reload); None when nothing was written."""
    row = await cursor.fetchone()
    if row is None:
        return None
    await conn.execute(
        "INSERT INTO definition_versions (project_id, environment, version) VALUES (%s, %s, 1)"
        " ON CONFLICT (project_id, environment)"
        " DO UPDATE SET version = definition_versions.version + 1",
        (tenant.project_id, tenant.environment),
    )
    return DefinitionRow(*row)


async def create_definition(
    conn: Conn, tenant: Tenant, kind: str, code: str, status: str, body: str
) -> DefinitionRow | None:
    """Insert a definition; None when the code is taken."""
    cursor = await conn.execute(
        "INSERT INTO definitions (project_id, environment, kind, code, status, body)"
        " VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT DO NOTHING"
        " RETURNING kind, code, status, body, version, created_at, updated_at",
        (tenant.project_id, tenant.environment, kind, code, status, body),
    )
    return await _written(conn, tenant, cursor)


async def update_definition(
    conn: Conn, tenant: Tenant, kind: str, code: str, status: str, body: str
) -> DefinitionRow | None:
    """Replace a definition's body; None when it does not exist."""
    cursor = await conn.execute(
        "UPDATE definitions SET status = %s, body = %s::jsonb, version = version + 1,"
        " updated_at = now() WHERE project_id = %s AND environment = %s AND kind = %s"
        " AND code = %s RETURNING kind, code, status, body, version, created_at, updated_at",
        (status, body, tenant.project_id, tenant.environment, kind, code),
    )
    return await _written(conn, tenant, cursor)


async def get_definition(conn: Conn, tenant: Tenant, kind: str, code: str) -> DefinitionRow | None:
    """One definition by code."""
    cursor = await conn.execute(
        "SELECT kind, code, status, body, version, created_at, updated_at FROM definitions"
        " WHERE project_id = %s AND environment = %s AND kind = %s AND code = %s",
        (tenant.project_id, tenant.environment, kind, code),
    )
    row = await cursor.fetchone()
    return None if row is None else DefinitionRow(*row)


async def list_definitions(
    conn: Conn, tenant: Tenant, kind: str | None = None, *, include_archived: bool = True
) -> list[DefinitionRow]:
    """Definitions of a tenant (of one kind, if given), by code."""
    cursor = await conn.execute(
        "SELECT kind, code, status, body, version, created_at, updated_at FROM definitions"
        " WHERE project_id = %s AND environment = %s AND (%s::text IS NULL OR kind = %s)"
        " AND (%s OR status <> 'archived') ORDER BY kind, code",
        (tenant.project_id, tenant.environment, kind, kind, include_archived),
    )
    return [DefinitionRow(*row) for row in await cursor.fetchall()]


async def definitions_version(conn: Conn, tenant: Tenant) -> int:
    """The tenant's definition version (0 before the first definition)."""
    cursor = await conn.execute(
        "SELECT version FROM definition_versions WHERE project_id = %s AND environment = %s",
        (tenant.project_id, tenant.environment),
    )
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])
