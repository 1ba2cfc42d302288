"""The mechanics' writes skip rows that would not change (each row version written is
PostgreSQL work paid per event)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from bricqs.storage.streaks import save_streak_states
from bricqs.storage.tenants import Tenant
from bricqs_devstack.servers import Server
from tests import conftest


async def _versions(conn: psycopg.AsyncConnection[Any], table: str) -> dict[str, str]:
    """participant -> the row's version (xmin: the transaction that wrote it)."""
    cursor = await conn.execute(f"SELECT participant_id, xmin::text FROM {table}")  # noqa: S608
    return {r[0]: r[1] for r in await cursor.fetchall()}


def test_a_streak_state_that_did_not_change_is_not_written_again(
    postgres_server: Server, tenant: conftest.Tenant
) -> None:
    scope = Tenant(tenant.project_id, "live")

    async def run(url: str) -> tuple[dict[str, str], dict[str, str], list[tuple[Any, ...]]]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await save_streak_states(
                conn, scope, [("daily", "ann", 10, 3, 5, "UTC"), ("daily", "bob", 10, 1, 1, "UTC")]
            )
            before = await _versions(conn, "streak_state")
            # Ann's state as it was; Bob's run grew.
            await save_streak_states(
                conn, scope, [("daily", "ann", 10, 3, 5, "UTC"), ("daily", "bob", 11, 2, 2, "UTC")]
            )
            after = await _versions(conn, "streak_state")
            cursor = await conn.execute(
                "SELECT participant_id, last_index, last_run_length, longest FROM streak_state"
                " WHERE project_id = %s ORDER BY participant_id",
                (scope.project_id,),
            )
            return before, after, await cursor.fetchall()

    before, after, rows = asyncio.run(run(postgres_server.url))
    assert after["ann"] == before["ann"]
    assert after["bob"] != before["bob"]
    assert rows == [("ann", 10, 3, 5), ("bob", 11, 2, 2)]
