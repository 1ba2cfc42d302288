"""Retention (docs/retention.md): weekly partitions of events and facts, dropped once every
project with rows in them is past its retention, and what each project no longer keeps
deleted from the partitions others still keep.

The round runs on the test's clock (`retention_round(now=…)`): moving it weeks ahead ages
the rows stored now. Tests that move it get PostgreSQL (and Redis) servers of their own,
since dropping partitions and raising the floor would reach other tests' rows.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from bricqs.ids import new_event_id
from bricqs.schemas import Envelope
from bricqs.storage import participant_data, partitions, tenants
from bricqs.storage.events import store_events
from bricqs.storage.migrate import available_migrations, migrate
from bricqs.storage.partitions import EVENTS, FACTS, week_start
from bricqs.storage.tenants import Tenant as Scope
from bricqs_devstack.servers import Server, start_postgres
from bricqs_processor.retention import RetentionReport, retention_round
from tests.conftest import PARTICIPANT_TOKEN_SECRET, Story, api_client, make_tenant, private_servers
from tests.lib.test_admin import admin

NOW = datetime.now(UTC)
PURCHASE = {"fact_type": "custom.purchase"}


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, Server]]:
    with private_servers(tmp_path) as started:
        yield started


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _round(url: str, now: datetime) -> RetentionReport:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await retention_round(conn, now, weeks_ahead=8, chunk=100)


def round_at(url: str, now: datetime) -> RetentionReport:
    """One retention round as of `now`."""
    return run(_round(url, now))


def set_retention(url: str, project_id: str, days: int | None) -> None:
    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            assert await tenants.set_retention(conn, project_id, days)

    run(go())


def envelope(project: str, participant: str, received: datetime, occurred: datetime) -> Envelope:
    return Envelope(
        event_id=new_event_id(),
        project_id=project,
        environment="live",
        event_name="purchase",
        participant_id=participant,
        properties={},
        occurred_at=occurred,
        received_at=received,
    )


def store(url: str, envelopes: list[Envelope]) -> Any:
    async def go() -> Any:
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            return await store_events(conn, envelopes, idempotency_ttl=timedelta(days=30))

    return run(go())


def where(db: psycopg.Connection[Any], table: str, column: str, value: str) -> list[str]:
    rows = db.execute(
        f"SELECT tableoid::regclass::text FROM {table} WHERE {column} = %s",  # noqa: S608
        (value,),
    ).fetchall()
    return [r[0] for r in rows]


def count(db: psycopg.Connection[Any], table: str, project_id: str) -> int:
    row = db.execute(
        f"SELECT count(*) FROM {table} WHERE project_id = %s",  # noqa: S608
        (project_id,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def weekly(table: str, start: datetime) -> str:
    return f"partitions.{table}_{start:%Y%m%d}"


# ---------------------------------------------------------------------------------------
# Where rows go


def test_rows_land_in_the_partition_of_their_week_and_older_ones_in_the_oldest(
    servers: dict[str, Server],
) -> None:
    url = servers["postgres"].url
    tenant = make_tenant(url)
    this_week, next_week = week_start(NOW), week_start(NOW) + timedelta(days=7)
    now_event = envelope(tenant.project_id, "ann", NOW, NOW)
    later = envelope(tenant.project_id, "bob", next_week + timedelta(hours=1), next_week)
    ancient = envelope(tenant.project_id, "cid", NOW, datetime(2001, 1, 1, tzinfo=UTC))
    store(url, [now_event, later, ancient])
    with psycopg.connect(url) as db:
        floor = db.execute("SELECT floor FROM retention_floors WHERE parent = 'facts'").fetchone()
        assert floor is not None
        assert where(db, "events", "event_id", now_event.event_id) == [weekly("events", this_week)]
        assert where(db, "events", "event_id", later.event_id) == [weekly("events", next_week)]
        facts = {
            e.participant_id: where(db, "facts", "participant_id", e.participant_id)
            for e in (now_event, later, ancient)
        }
        assert facts["ann"] == [weekly("facts", this_week)]
        assert facts["bob"] == [weekly("facts", next_week)]
        # Older than every partition: kept in the oldest, with its own occurred_at intact.
        assert facts["cid"] == [weekly("facts", floor[0])]
        occurred = db.execute(
            "SELECT occurred_at FROM facts WHERE participant_id = 'cid'"
        ).fetchone()
        assert occurred == (datetime(2001, 1, 1, tzinfo=UTC),)
    # A redelivered entry is still recognised: same event id, same partition key.
    again = store(url, [ancient])
    assert again.stored == 0


def test_a_round_creates_partitions_weeks_ahead(servers: dict[str, Server]) -> None:
    url = servers["postgres"].url
    later = NOW + timedelta(days=70)
    report = round_at(url, later)
    assert report.created > 0
    with psycopg.connect(url) as db:
        names = {r[0] for r in db.execute("SELECT relname FROM pg_class WHERE relispartition")}
    for table in ("events", "facts"):
        for weeks in range(9):
            assert f"{table}_{week_start(later) + timedelta(days=7 * weeks):%Y%m%d}" in names
    # Made as tables then attached, they have the parent's indexes: rows land there and
    # a redelivery is still a no-op.
    tenant = make_tenant(url)
    arriving = envelope(tenant.project_id, "ann", later, later)
    assert store(url, [arriving]).stored == 1
    assert store(url, [arriving]).stored == 0
    with psycopg.connect(url) as db:
        assert where(db, "facts", "participant_id", "ann") == [weekly("facts", week_start(later))]


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
            " fact_type) VALUES ('whe_x', %s, %s, 'live', %s)",
            (fact.fact_id, tenant.project_id, fact.fact_type),
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


# ---------------------------------------------------------------------------------------
# Participant data rights on partitioned tables


def test_erasure_never_reaches_another_participants_row_at_the_same_place_in_another_partition(
    servers: dict[str, Server],
) -> None:
    url = servers["postgres"].url
    tenant = make_tenant(url)
    in_two_weeks = week_start(NOW) + timedelta(days=14)
    in_three_weeks = in_two_weeks + timedelta(days=7)
    # Each the first row of an empty partition: both at ctid (0,1).
    store(url, [envelope(tenant.project_id, "ann", in_two_weeks, in_two_weeks)])
    store(url, [envelope(tenant.project_id, "bob", in_three_weeks, in_three_weeks)])
    scope = Scope(tenant.project_id, "live")

    async def go() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            exported = await participant_data.export_rows(conn, scope, "ann")
            while await participant_data.erase_batch(conn, scope, "ann", 100):
                pass
            return exported

    exported = run(go())
    assert {e["participant_id"] for e in exported["events"]} == {"ann"}
    assert {f["participant_id"] for f in exported["facts"]} == {"ann"}
    with psycopg.connect(url) as db:
        assert where(db, "events", "participant_id", "ann") == []
        assert where(db, "events", "participant_id", "bob") != []
        assert where(db, "facts", "participant_id", "bob") != []


# ---------------------------------------------------------------------------------------
# The migration


def test_the_migration_keeps_every_existing_row(tmp_path: Path) -> None:
    before = tmp_path / "before"
    before.mkdir()
    for migration in available_migrations():
        if migration.version < "0020":
            (before / migration.filename).write_text(migration.sql)
    server = start_postgres(tmp_path / "pg", fsync=False)
    try:
        migrate(server.url, before)
        rows = [
            (f"evt_{i}", datetime(2001, 1, 1, tzinfo=UTC) + timedelta(days=400 * i))
            for i in range(10)
        ] + [("evt_now", NOW)]
        with psycopg.connect(server.url, autocommit=True) as db:
            db.execute("INSERT INTO projects (project_id, name) VALUES ('prj_m', 'm')")
            for event_id, at in rows:
                db.execute(
                    "INSERT INTO events (project_id, environment, event_id, event_name,"
                    " participant_id, properties, occurred_at, received_at)"
                    " VALUES ('prj_m', 'live', %s, 'e', 'p', '{\"a\": 1}', %s, %s)",
                    (event_id, at, at),
                )
                db.execute(
                    "INSERT INTO facts (project_id, environment, fact_id, fact_type,"
                    " participant_id, event_id, properties, occurred_at)"
                    " VALUES ('prj_m', 'live', %s, 'custom.e', 'p', %s, '{}', %s)",
                    ("fact_" + event_id, event_id, at),
                )
            old_events = db.execute("SELECT * FROM events ORDER BY event_id").fetchall()
            old_facts = db.execute("SELECT * FROM facts ORDER BY fact_id").fetchall()

        assert migrate(server.url) == ["0020_retention"]

        with psycopg.connect(server.url) as db:
            new_events = db.execute("SELECT * FROM events ORDER BY event_id").fetchall()
            new_facts = db.execute("SELECT * FROM facts ORDER BY fact_id").fetchall()
            kinds = db.execute(
                "SELECT relkind FROM pg_class WHERE relname IN ('events', 'facts')"
            ).fetchall()
        assert [r[:-1] for r in new_events] == old_events  # retention_at comes last
        assert [r[:-1] for r in new_facts] == old_facts
        assert kinds == [("p",), ("p",)]
    finally:
        server.stop()
        shutil.rmtree(tmp_path / "pg", ignore_errors=True)


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


def test_partitions_are_created_while_a_writer_holds_the_table(servers: dict[str, Server]) -> None:
    url = servers["postgres"].url
    tenant = make_tenant(url)
    with psycopg.connect(url) as writer:  # a batch transaction, open throughout
        writer.execute(
            "INSERT INTO events (project_id, environment, event_id, event_name,"
            " participant_id, properties, occurred_at, received_at, retention_at)"
            " VALUES (%s, 'live', 'evt_open', 'e', 'p', '{}', now(), now(), now())",
            (tenant.project_id,),
        )
        # Under a lock timeout of 2 s: an ACCESS EXCLUSIVE lock would fail here.
        created = run(_create_ahead(url, NOW + timedelta(days=70)))
        assert len(created) == 6  # three weeks of each
        writer.commit()


async def _create_ahead(url: str, until: datetime) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return [n for t in (EVENTS, FACTS) for n in await partitions.create_ahead(conn, t, until)]


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
