"""Partitions of events and facts (migration 0020, docs/retention.md): where rows go, how
partitions are made ahead without stopping writers, the migration of existing rows, and
participant data rights over partitioned tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bricqs.storage import participant_data, partitions
from bricqs.storage.migrate import migrate
from bricqs.storage.partitions import EVENTS, FACTS, week_start
from bricqs.storage.tenants import Tenant as Scope
from bricqs_devstack.servers import Server
from tests.conftest import make_tenant, migrated_before
from tests.processor.partitioned import (  # noqa: F401 - own_servers: the `servers` fixture
    NOW,
    envelope,
    own_servers,
    round_at,
    run,
    store,
    weekly,
    where,
)

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
    with migrated_before(tmp_path, "0020") as server:
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

        assert migrate(server.url)[0] == "0020_retention"  # later ones follow

        with psycopg.connect(server.url) as db:
            new_events = db.execute("SELECT * FROM events ORDER BY event_id").fetchall()
            new_facts = db.execute("SELECT * FROM facts ORDER BY fact_id").fetchall()
            kinds = db.execute(
                "SELECT relkind FROM pg_class WHERE relname IN ('events', 'facts')"
            ).fetchall()
        assert [r[:-1] for r in new_events] == old_events  # retention_at comes last
        assert [r[:-1] for r in new_facts] == old_facts
        assert kinds == [("p",), ("p",)]
