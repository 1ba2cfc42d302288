"""The per-minute fact counts the overview reads (migration 0013) are exactly-once: after
a workload delivered twice, concurrently and in other batches, they equal a count of the
stored facts, type by type."""

from __future__ import annotations

import asyncio
import random
import re
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from bricqs.ids import new_fact_id
from bricqs.schemas import Fact
from bricqs.storage.events import insert_facts
from bricqs_devstack.servers import Server
from tests.conftest import Story, Tenant
from tests.console.test_console_security import sign_in
from tests.mechanics.test_exactly_once import (
    make_envelopes,
    run,
    run_concurrently,
    setup_tenant,
    split,
)


def test_the_fact_counts_equal_the_facts_after_redeliveries(
    postgres_server: Server, db: Any
) -> None:
    url = postgres_server.url
    tenant = setup_tenant(url)
    envelopes = make_envelopes(tenant, 150, seed=11)
    run(url, split(envelopes, random.Random(12)))
    # Everything again, with the first half a third time, racing on 3 connections.
    again = envelopes + envelopes[:75]
    random.Random(13).shuffle(again)
    run_concurrently(url, split(again, random.Random(14)), workers=3)

    def by_type(sql: str) -> dict[str, int]:
        rows = db.execute(sql, {"p": tenant.project_id}).fetchall()
        return {fact_type: int(count) for fact_type, count in rows}

    facts = by_type(
        "SELECT fact_type, count(*) FROM facts WHERE project_id = %(p)s GROUP BY fact_type"
    )
    counted = by_type(
        "SELECT fact_type, sum(count) FROM fact_counts WHERE project_id = %(p)s GROUP BY fact_type"
    )
    assert facts["custom.purchase"] == 150 and len(facts) > 2  # outcomes were made too
    assert counted == facts


def test_fresh_facts_of_two_tenants_are_refused_not_counted_to_one(
    postgres_server: Server,
) -> None:
    """A round's fresh facts are counted by type under their one tenant; facts of two
    tenants given as fresh would be counted to the first, so they are refused."""
    at = datetime(2026, 6, 1, tzinfo=UTC)

    def fact(project_id: str) -> Fact:
        return Fact(
            fact_id=new_fact_id(),
            fact_type="points.awarded",
            project_id=project_id,
            environment="live",
            participant_id="ann",
            event_id="evt_1",
            properties={},
            occurred_at=at,
        )

    async def insert(facts: list[Fact]) -> None:
        url = postgres_server.url
        async with await psycopg.AsyncConnection.connect(url) as conn:
            await insert_facts(conn, facts, fresh=True)

    with pytest.raises(ValueError, match="one tenant"):
        asyncio.run(insert([fact("prj_a"), fact("prj_b")]))
    asyncio.run(insert([fact("prj_a"), fact("prj_a")]))  # one tenant's: stored


def test_the_overview_reads_the_counts_not_the_rows(
    console_client: TestClient[Any], story: Story, tenant: Tenant, db: Any
) -> None:
    story.send("purchase", "a")
    # Counts kept for today's first minute by a writer long gone (or by the migration's
    # backfill), whose facts are not among the rows.
    db.cursor().executemany(
        "INSERT INTO fact_counts VALUES (%s, 'live',"
        " date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', %s, 0, %s)",
        [(tenant.project_id, "custom.purchase", 40), (tenant.project_id, "badge.earned", 2)],
    )
    sign_in(console_client, tenant.live_key)
    page = console_client.get("/console/").text
    assert '<b id="events-today">41</b>' in page
    types = dict(re.findall(r"<tr><td>([a-z_.]+)</td><td class=\"num\">(\d+)</td></tr>", page))
    assert types == {"custom.purchase": "41", "badge.earned": "2"}
