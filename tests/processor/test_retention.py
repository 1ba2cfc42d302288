"""Retention (docs/retention.md): weekly partitions of events and facts, dropped once every
project with rows in them is past its retention, and what each project no longer keeps
deleted from the partitions others still keep.

The round runs on the test's clock (`retention_round(now=…)`): moving it weeks ahead ages
the rows stored now. Tests that move it get PostgreSQL (and Redis) servers of their own,
since dropping partitions and raising the floor would reach other tests' rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from litestar.testing import TestClient
from psycopg_pool import AsyncConnectionPool

from bricqs.storage import partitions
from bricqs.storage.partitions import EVENTS, FACTS, week_start
from bricqs_devstack.servers import Server
from bricqs_processor import retention
from bricqs_processor.housekeeping import Housekeeping
from bricqs_processor.settings import ProcessorSettings
from tests.conftest import PARTICIPANT_TOKEN_SECRET, Story, api_client, make_tenant
from tests.lib.test_admin import admin
from tests.processor.partitioned import (  # noqa: F401 - own_servers: the `servers` fixture
    NOW,
    count,
    envelope,
    own_servers,
    round_at,
    run,
    set_retention,
    store,
    weekly,
    where,
)

PURCHASE = {"fact_type": "custom.purchase"}

# ---------------------------------------------------------------------------------------
# Dropping history leaves every participant's state as it was


MECHANICS = [
    ("points-rules", {"code": "buy", "name": "Buy", "amount": {"fixed": 10}, "trigger": PURCHASE}),
    (
        "badges",
        {"code": "first", "name": "First", "criteria": [{"criterion": PURCHASE, "threshold": 1}]},
    ),
    (
        "challenges",
        {
            "code": "three",
            "name": "Three",
            "objectives": [{"code": "o", "criterion": PURCHASE, "target": 3}],
        },
    ),
    ("streaks", {"code": "daily", "name": "Daily", "trigger": PURCHASE}),
    ("leaderboards", {"code": "all", "name": "All time"}),
]
"""Points, a badge, a challenge, a streak and a leaderboard, all counting purchases."""


def define(story: Story) -> None:
    for segment, body in MECHANICS:
        story.define(segment, body)


def full_state(story: Story, participants: list[str]) -> dict[str, Any]:
    """Everything the api shows of the participants but their fact history."""
    shown: dict[str, Any] = {"board": story.get("/leaderboards/all")}
    for p in participants:
        shown[p] = {
            "state": story.get(f"/participants/{p}/state"),
            "ledger": story.get(f"/participants/{p}/points/transactions"),
            "badges": story.get(f"/participants/{p}/badges"),
            "streaks": story.get(f"/participants/{p}/streaks"),
            "challenges": story.get(f"/participants/{p}/challenges"),
            "rank": story.get(f"/leaderboards/all/rank/{p}"),
        }
    return shown


@pytest.fixture
def private_story(servers: dict[str, Server]) -> Iterator[Story]:
    from bricqs_ingest.app import create_app as create_ingest
    from tests.ingest.conftest import ingest_settings

    redis_url, url = servers["redis"].url, servers["postgres"].url
    settings = ingest_settings(
        redis_url, url, rules_refresh_seconds=0, participant_token_secret=PARTICIPANT_TOKEN_SECRET
    )
    tenant = make_tenant(url)
    with (
        api_client(redis_url, url) as api,
        TestClient(create_ingest(settings), base_url="http://127.0.0.1") as ingest,
    ):
        yield Story(api, ingest, tenant, tenant.live_key)


def test_dropping_partitions_past_retention_changes_no_participant_state(
    servers: dict[str, Server], private_story: Story
) -> None:
    url, story = servers["postgres"].url, private_story
    project = story.tenant.project_id
    define(story)
    participants = ["ann", "bob", "cid"]
    for n, p in enumerate(participants):
        for _ in range(n + 1):
            story.send("purchase", p)
    before = full_state(story, participants)
    assert before["cid"]["state"]["points"]["balance"] == 30
    set_retention(url, project, 7)

    report = round_at(url, NOW + timedelta(days=30))

    assert report.dropped >= 2  # this week's events and facts at least
    with psycopg.connect(url) as db:
        assert count(db, "events", project) == 0
        assert count(db, "facts", project) == 0
    assert full_state(story, participants) == before
    # And what comes next builds on that state: one more purchase, counted once.
    story.send("purchase", "ann")
    assert story.get("/participants/ann/state")["points"]["balance"] == 20


def test_a_partition_newer_than_retention_is_never_dropped(
    servers: dict[str, Server], private_story: Story
) -> None:
    url, story = servers["postgres"].url, private_story
    project = story.tenant.project_id
    define(story)
    story.send("purchase", "ann")
    set_retention(url, project, 30)
    # The week's partition ends within 7 days: 30 days of retention reach past it until
    # about 37 days from now.
    for days in (0, 10, 29):
        report = round_at(url, NOW + timedelta(days=days))
        assert (report.dropped, report.deleted) == (0, 0)
    with psycopg.connect(url) as db:
        assert count(db, "events", project) == 1
        assert count(db, "facts", project) >= 3  # the purchase and its outcomes
    assert round_at(url, NOW + timedelta(days=38)).dropped >= 2


def test_a_longer_retention_keeps_its_rows_and_shorter_ones_go_row_by_row(
    servers: dict[str, Server],
) -> None:
    url = servers["postgres"].url
    short, long = make_tenant(url, "short"), make_tenant(url, "long")
    store(url, [envelope(short.project_id, f"s{i}", NOW, NOW) for i in range(250)])
    store(url, [envelope(long.project_id, "l", NOW, NOW)])
    set_retention(url, short.project_id, 7)
    set_retention(url, long.project_id, None)

    report = round_at(url, NOW + timedelta(days=30))

    assert report.dropped == 0
    assert report.deleted == 500  # 250 events, 250 facts, in chunks of 100
    with psycopg.connect(url) as db:
        assert (count(db, "events", short.project_id), count(db, "facts", short.project_id)) == (
            0,
            0,
        )
        assert (count(db, "events", long.project_id), count(db, "facts", long.project_id)) == (1, 1)

    set_retention(url, long.project_id, 7)
    assert round_at(url, NOW + timedelta(days=30)).dropped >= 2
    with psycopg.connect(url) as db:
        assert count(db, "events", long.project_id) == 0


def test_a_fact_named_by_a_webhook_message_keeps_its_partition(
    servers: dict[str, Server],
) -> None:
    url = servers["postgres"].url
    tenant = make_tenant(url)
    stored = store(url, [envelope(tenant.project_id, "ann", NOW, NOW)])
    fact = stored.facts[0]
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "INSERT INTO webhook_messages (endpoint_id, fact_id, project_id, environment,"
            " participant_id, fact_type) VALUES ('whe_x', %s, %s, 'live', %s, %s)",
            (fact.fact_id, tenant.project_id, fact.participant_id, fact.fact_type),
        )
    set_retention(url, tenant.project_id, 7)
    later = NOW + timedelta(days=30)

    report = round_at(url, later)

    with psycopg.connect(url, autocommit=True) as db:
        assert count(db, "events", tenant.project_id) == 0  # events have no such tie
        assert where(db, "facts", "fact_id", fact.fact_id) == [weekly("facts", week_start(NOW))]
        assert report.deleted == 0
        db.execute("DELETE FROM webhook_messages WHERE fact_id = %s", (fact.fact_id,))
    round_at(url, later)
    with psycopg.connect(url) as db:
        assert where(db, "facts", "fact_id", fact.fact_id) == []


def test_rows_that_arrive_while_a_partition_is_detached_are_moved_not_lost(
    servers: dict[str, Server],
) -> None:
    url = servers["postgres"].url
    gone, staying = make_tenant(url, "gone"), make_tenant(url, "staying")
    store(url, [envelope(gone.project_id, "g", NOW, NOW)])

    async def go() -> int:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            oldest = (await partitions.list_partitions(conn, FACTS))[0]
            await partitions.detach_oldest(conn, FACTS, oldest)
            # A late fact of a project that keeps it, written just before the detach
            # took effect (straight into the table, as the race would have it).
            await conn.execute(
                f"INSERT INTO partitions.{oldest.name} (project_id, environment, fact_id,"  # noqa: S608
                " fact_type, participant_id, event_id, properties, occurred_at, retention_at)"
                " VALUES (%s, 'live', 'fact_late', 'custom.x', 's', 'evt_late', '{}', %s, %s)",
                (staying.project_id, oldest.start, oldest.start),
            )
            return await partitions.drop_detached(conn, FACTS, oldest.name, {gone.project_id})

    assert run(go()) == 1
    with psycopg.connect(url) as db:
        assert count(db, "facts", gone.project_id) == 0
        assert where(db, "facts", "fact_id", "fact_late") != []


def test_fact_counts_older_than_retention_go(servers: dict[str, Server]) -> None:
    url = servers["postgres"].url
    tenant, other = make_tenant(url), make_tenant(url, "other")
    store(url, [envelope(tenant.project_id, "ann", NOW, NOW)])
    store(url, [envelope(other.project_id, "bob", NOW, NOW)])
    set_retention(url, tenant.project_id, 7)
    set_retention(url, other.project_id, 400)

    report = round_at(url, NOW + timedelta(days=8))

    assert report.counts_deleted == 1
    with psycopg.connect(url) as db:
        assert count(db, "fact_counts", tenant.project_id) == 0
        assert count(db, "fact_counts", other.project_id) == 1


def test_a_retention_shorter_than_a_week_is_refused(servers: dict[str, Server]) -> None:
    url = servers["postgres"].url
    tenant = make_tenant(url)
    with pytest.raises(ValueError, match="at least 7 days"):
        set_retention(url, tenant.project_id, 6)


def test_bricqs_admin_sets_a_projects_retention(servers: dict[str, Server]) -> None:
    url = servers["postgres"].url
    tenant = make_tenant(url)

    def retention() -> Any:
        with psycopg.connect(url) as db:
            row = db.execute(
                "SELECT retention_days FROM projects WHERE project_id = %s", (tenant.project_id,)
            ).fetchone()
        return row and row[0]

    assert retention() == 400  # the default
    done = admin("project", "retention", tenant.project_id, "--days", "30", "--database-url", url)
    assert done.returncode == 0, done.stderr
    assert retention() == 30
    done = admin("project", "retention", tenant.project_id, "--forever", "--database-url", url)
    assert (done.returncode, retention()) == (0, None)
    refused = admin("project", "retention", tenant.project_id, "--days", "3", "--database-url", url)
    assert refused.returncode != 0
    assert "at least 7 days" in refused.stderr


def test_a_round_cut_short_after_the_detach_is_finished_by_the_next(
    servers: dict[str, Server],
) -> None:
    url = servers["postgres"].url
    gone, staying = make_tenant(url, "gone"), make_tenant(url, "staying")
    store(url, [envelope(gone.project_id, "g", NOW, NOW)])
    store(url, [envelope(staying.project_id, "s", NOW, NOW)])
    set_retention(url, gone.project_id, 7)

    async def detach_only() -> str:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            oldest = (await partitions.list_partitions(conn, EVENTS))[0]
            await partitions.detach_oldest(conn, EVENTS, oldest)  # then the process died
            return oldest.name

    name = run(detach_only())
    report = round_at(url, NOW + timedelta(days=30))

    assert report.moved == 1  # the project that keeps 400 days keeps its event
    with psycopg.connect(url) as db:
        assert count(db, "events", gone.project_id) == 0
        assert count(db, "events", staying.project_id) == 1
        left = db.execute("SELECT count(*) FROM pg_class WHERE relname = %s", (name,)).fetchone()
        assert left == (0,)


def test_the_housekeeping_chore_runs_a_round_on_one_replica_per_period(
    servers: dict[str, Server],
) -> None:
    redis_url, url = servers["redis"].url, servers["postgres"].url
    tenant = make_tenant(url)
    store(url, [envelope(tenant.project_id, "ann", NOW, NOW)])

    async def replicas() -> list[int | None]:
        client = aioredis.Redis.from_url(redis_url)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(url, min_size=1, open=False)
        await pool.open()
        try:
            chores = []
            for i in range(3):
                settings = ProcessorSettings(
                    redis_url=redis_url, database_url=url, consumer_name=f"r{i}"
                )
                chores.append(
                    retention.chore(settings, Housekeeping(settings, client, pool).in_turn)
                )
            return list(await asyncio.gather(*(run_chore() for run_chore in chores)))
        finally:
            await pool.close()
            await client.aclose()

    turns = run(replicas())
    assert turns.count(None) == 2  # one round: the other replicas found the lease taken
    with psycopg.connect(url) as db:
        assert count(db, "events", tenant.project_id) == 1
        ahead = week_start(NOW + timedelta(weeks=8))  # past what the migration made
        names = {r[0] for r in db.execute("SELECT relname FROM pg_class WHERE relispartition")}
    assert {f"events_{ahead:%Y%m%d}", f"facts_{ahead:%Y%m%d}"} <= names
