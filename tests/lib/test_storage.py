"""Migrations and the shared write path, against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bricqs.ids import new_event_id
from bricqs.schemas import Envelope
from bricqs.storage.events import Outcome, purge_expired_idempotency_keys, store_events
from bricqs.storage.migrate import available_migrations, migrate
from bricqs_devstack.servers import Server
from tests.conftest import Tenant


def test_migrations_apply_once_even_when_run_concurrently(postgres_server: Server, db: Any) -> None:
    db.execute("CREATE DATABASE migrate_race")
    url = postgres_server.url.rsplit("/", 1)[0] + "/migrate_race"
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: migrate(url), range(4)))
        assert sorted(map(len, results)) == [0, 0, 0, len(available_migrations())]
        assert migrate(url) == []
    finally:
        db.execute("DROP DATABASE migrate_race WITH (FORCE)")


def envelope(tenant: Tenant, **changes: Any) -> Envelope:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "event_id": new_event_id(),
        "project_id": tenant.project_id,
        "environment": "live",
        "event_name": "e",
        "participant_id": "p",
        "properties": {"n": 1},
        "occurred_at": now,
        "received_at": now,
    }
    fields.update(changes)
    return Envelope(**fields)


def store(url: str, envelopes: list[Envelope], ttl: timedelta = timedelta(days=30)) -> Any:
    async def run() -> Any:
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            return await store_events(conn, envelopes, idempotency_ttl=ttl)

    return asyncio.run(run())


def test_storing_the_same_envelopes_again_changes_nothing(
    postgres_server: Server, tenant: Tenant, db: Any
) -> None:
    batch = [envelope(tenant, participant_id=f"p{i % 3}") for i in range(10)]
    first = store(postgres_server.url, batch)
    again = store(postgres_server.url, batch + batch)
    assert first.count(Outcome.STORED) == 10
    assert again.count(Outcome.ALREADY_STORED) == 10 and again.stored == 0
    counts = db.execute(
        "SELECT (SELECT count(*) FROM events WHERE project_id = %(p)s),"
        " (SELECT count(*) FROM facts WHERE project_id = %(p)s),"
        " (SELECT sum(event_count) FROM participants WHERE project_id = %(p)s),"
        " (SELECT event_count FROM event_catalog WHERE project_id = %(p)s)",
        {"p": tenant.project_id},
    ).fetchone()
    assert counts == (10, 10, 10, 10)


def test_second_event_with_a_held_key_is_a_duplicate_even_in_one_batch(
    postgres_server: Server, tenant: Tenant
) -> None:
    a = envelope(tenant, idempotency_key="k", payload_hash="h")
    b = envelope(tenant, idempotency_key="k", payload_hash="h")
    result = store(postgres_server.url, [a, b])
    assert result.outcomes == {a.event_id: Outcome.STORED, b.event_id: Outcome.DUPLICATE}
    assert result.holders[b.event_id].event_id == a.event_id
    later = envelope(tenant, idempotency_key="k", payload_hash="h")
    assert store(postgres_server.url, [later]).outcomes[later.event_id] is Outcome.DUPLICATE


def test_expired_key_is_taken_by_the_next_event_and_purged(
    postgres_server: Server, tenant: Tenant, db: Any
) -> None:
    a = envelope(tenant, idempotency_key="old")
    store(postgres_server.url, [a], ttl=timedelta(seconds=-1))  # expired on arrival
    b = envelope(tenant, idempotency_key="old")
    assert store(postgres_server.url, [b]).outcomes[b.event_id] is Outcome.STORED
    c = envelope(tenant, idempotency_key="gone")
    store(postgres_server.url, [c], ttl=timedelta(seconds=-1))

    async def purge() -> int:
        async with await psycopg.AsyncConnection.connect(
            postgres_server.url, autocommit=True
        ) as conn:
            return await purge_expired_idempotency_keys(conn)

    assert asyncio.run(purge()) >= 1
    assert db.execute(
        "SELECT count(*) FROM idempotency_keys WHERE project_id = %s AND idempotency_key = 'gone'",
        (tenant.project_id,),
    ).fetchone() == (0,)


def admin(url: str, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "bricqs.admin", "--json", "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout)


def test_admin_tool_creates_projects_and_keys_and_revokes_them(postgres_server: Server) -> None:
    url = postgres_server.url
    code, created = admin(url, "project", "create", "Admin Test Co", "--with-keys")
    assert code == 0
    project_id = created["project"]["project_id"]
    assert created["keys"]["live"]["key"].startswith("bq_live_")
    assert created["keys"]["test"]["key"].startswith("bq_test_")
    code, minted = admin(url, "key", "create", "--project", project_id, "--env", "live")
    assert code == 0 and minted["key"]["environment"] == "live"
    code, revoked = admin(url, "key", "revoke", minted["key"]["key_id"])
    assert (code, revoked["revoked"]) == (0, minted["key"]["key_id"])
    code, listing = admin(url, "key", "list", "--project", project_id)
    assert [k["revoked_at"] is not None for k in listing["keys"]] == [False, False, True]
    assert all("key" not in k for k in listing["keys"])  # the plaintext is never shown again
    code, error = admin(url, "key", "revoke", minted["key"]["key_id"])
    assert code == 1 and "no active key" in error["error"]
    code, error = admin(url, "key", "create", "--project", "nope", "--env", "live")
    assert code == 1
    code, migrated = admin(url, "migrate")
    assert (code, migrated["applied"]) == (0, [])
