"""The mechanics' writes skip rows that would not change (each row version written is
PostgreSQL work paid per event)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import psycopg

from bricqs.ids import new_event_id, new_fact_id
from bricqs.mechanics.apply import apply_mechanics
from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import KINDS
from bricqs.mechanics.ruleset import RuleSet
from bricqs.schemas import Fact
from bricqs.storage.events import insert_facts
from bricqs.storage.locks import lock_participants
from bricqs.storage.progress import add_distinct_values
from bricqs.storage.streaks import save_streak_states
from bricqs.storage.tenants import Tenant
from bricqs_devstack.servers import Server
from tests import conftest


async def _versions(
    conn: psycopg.AsyncConnection[Any], table: str, tenant: Tenant
) -> dict[str, str]:
    """participant -> the row's version (xmin: the transaction that wrote it)."""
    cursor = await conn.execute(
        f"SELECT participant_id, xmin::text FROM {table} WHERE project_id = %s",  # noqa: S608
        (tenant.project_id,),
    )
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
            before = await _versions(conn, "streak_state", scope)
            # Ann's state as it was; Bob's run grew.
            await save_streak_states(
                conn, scope, [("daily", "ann", 10, 3, 5, "UTC"), ("daily", "bob", 11, 2, 2, "UTC")]
            )
            after = await _versions(conn, "streak_state", scope)
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


BUY = "custom.purchase_completed"


def _buy(tenant: Tenant, pid: str, day: int) -> Fact:
    return Fact(
        fact_id=new_fact_id(),
        fact_type=BUY,
        project_id=tenant.project_id,
        environment=tenant.environment,
        participant_id=pid,
        event_id=new_event_id(),
        properties={"amount": 10},
        occurred_at=datetime(2026, 11, day, 12, tzinfo=UTC),
    )


def test_judging_takes_the_buckets_it_just_wrote_without_reading_them_again(
    postgres_server: Server, tenant: conftest.Tenant
) -> None:
    """A badge on a count over the whole history is judged at the bucket the round just
    wrote: its value comes back from the write (one scan of the progress table's key, the
    upsert's own), and the award still comes at the threshold exactly."""
    scope = Tenant(tenant.project_id, "live")
    badge = parse_definition(
        KINDS["badges"][1],
        {
            "code": "two-buys",
            "name": "n",
            "criteria": [{"criterion": {"fact_type": BUY}, "threshold": 2}],
        },
    )
    assert not isinstance(badge, list)
    rules = RuleSet.compile([badge])

    async def rules_for(conn: Any, tenant: Tenant) -> RuleSet:
        return rules

    async def run(url: str) -> list[tuple[int, list[str]]]:
        seen = []
        scans = "SELECT pg_stat_get_xact_numscans('criterion_progress_pkey'::regclass)"
        async with await psycopg.AsyncConnection.connect(url) as conn:
            for day in (3, 4):
                facts = [_buy(scope, "ann", day)]
                async with conn.transaction():
                    await lock_participants(conn, [(scope.project_id, scope.environment, "ann")])
                    await insert_facts(conn, facts)
                    before = (await (await conn.execute(scans)).fetchone() or [0])[0]
                    effects = await apply_mechanics(conn, rules_for, facts)
                    after = (await (await conn.execute(scans)).fetchone() or [0])[0]
                awarded = [b["badge"] for e in effects.values() for b in e.badges]
                seen.append((after - before, awarded))
        return seen

    assert asyncio.run(run(postgres_server.url)) == [(1, []), (1, ["two-buys"])]


def test_a_distinct_value_seen_again_later_is_not_written_again(
    postgres_server: Server, tenant: conftest.Tenant
) -> None:
    scope = Tenant(tenant.project_id, "live")
    day = datetime(2026, 11, 10, tzinfo=UTC)

    async def run(url: str) -> tuple[list[dict[str, str]], list[tuple[Any, ...]]]:
        versions = []
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for ann_at, bob_at in ((day, day), (day.replace(day=12), day.replace(day=8))):
                values = [("c", "ann", "all", "sku1", ann_at), ("c", "bob", "all", "sku1", bob_at)]
                await add_distinct_values(conn, scope, values)
                versions.append(await _versions(conn, "criterion_distinct", scope))
            cursor = await conn.execute(
                "SELECT participant_id, first_at FROM criterion_distinct WHERE project_id = %s"
                " ORDER BY participant_id",
                (scope.project_id,),
            )
            return versions, await cursor.fetchall()

    (before, after), rows = asyncio.run(run(postgres_server.url))
    assert after["ann"] == before["ann"]  # seen later: nothing to change
    assert after["bob"] != before["bob"]  # seen earlier: the first time moves back
    assert rows == [("ann", day), ("bob", day.replace(day=8))]
