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


def test_batches_mixing_tenants_count_each_tenants_facts(postgres_server: Server) -> None:
    """A processor batch holds several tenants' events, whose custom facts go in without a
    conflict check and are counted by the caller (`insert_facts(fresh=True)`): each
    tenant's counts must equal its stored facts, redeliveries included."""
    url = postgres_server.url
    tenants = [setup_tenant(url), setup_tenant(url)]
    envelopes = [
        *make_envelopes(tenants[0], 60, seed=21),
        *make_envelopes(tenants[1], 40, seed=22),
    ]
    random.Random(23).shuffle(envelopes)
    run(url, split(envelopes, random.Random(24)))
    again = envelopes[:50]
    random.Random(25).shuffle(again)
    run(url, split(again, random.Random(26)))

    def by_type(sql: str, project_id: str) -> dict[str, int]:
        with psycopg.connect(url) as conn:
            rows = conn.execute(sql, {"p": project_id}).fetchall()
        return {fact_type: int(count) for fact_type, count in rows}

    for tenant, sent in zip(tenants, (60, 40), strict=True):
        facts = by_type(
            "SELECT fact_type, count(*) FROM facts WHERE project_id = %(p)s GROUP BY fact_type",
            tenant.project_id,
        )
        counted = by_type(
            "SELECT fact_type, sum(count) FROM fact_counts WHERE project_id = %(p)s"
            " GROUP BY fact_type",
            tenant.project_id,
        )
        assert facts["custom.purchase"] == sent and len(facts) > 2
        assert counted == facts


def test_fresh_facts_are_counted_under_their_own_tenant(postgres_server: Server) -> None:
    """Fresh facts of two tenants in one call: each counted under its tenant, by type."""
    at = datetime(2026, 6, 1, tzinfo=UTC)
    suffix = new_fact_id()[-8:].lower()  # new projects each run
    projects = [f"prj_counts_{suffix}_{n}" for n in (1, 2)]  # in this order by name

    def fact(project_id: str, fact_type: str) -> Fact:
        return Fact(
            fact_id=new_fact_id(),
            fact_type=fact_type,
            project_id=project_id,
            environment="live",
            participant_id="ann",
            event_id="evt_1",
            properties={},
            occurred_at=at,
        )

    async def insert(facts: list[Fact]) -> None:
        async with await psycopg.AsyncConnection.connect(postgres_server.url) as conn:
            await insert_facts(conn, facts, fresh=True)

    a, b = projects
    asyncio.run(
        insert(
            [
                fact(a, "points.awarded"),
                fact(b, "points.awarded"),
                fact(a, "badge.awarded"),
                fact(a, "points.awarded"),
            ]
        )
    )
    asyncio.run(insert([fact(b, "points.awarded")]))  # one tenant's
    with psycopg.connect(postgres_server.url) as conn:
        counted = conn.execute(
            "SELECT project_id, fact_type, sum(count)::int FROM fact_counts"
            " WHERE project_id = ANY(%s) GROUP BY 1, 2 ORDER BY 1, 2",
            (projects,),
        ).fetchall()
    assert counted == [(a, "badge.awarded", 1), (a, "points.awarded", 2), (b, "points.awarded", 2)]


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
