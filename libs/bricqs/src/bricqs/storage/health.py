"""The database probe of readiness checks."""

from __future__ import annotations

from bricqs.storage.tenants import Conn


async def ping(conn: Conn) -> None:
    """A round trip that needs no table: the server answers queries."""
    await conn.execute("SELECT 1")
