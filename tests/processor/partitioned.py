"""What the retention tests share: servers of their own, storing envelopes straight, a
retention round on the test's clock, and where rows are."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bricqs.ids import new_event_id
from bricqs.schemas import Envelope
from bricqs.storage import tenants
from bricqs.storage.events import store_events
from bricqs_devstack.servers import Server
from bricqs_processor.retention import RetentionReport, retention_round
from tests.conftest import private_servers

NOW = datetime.now(UTC)


@pytest.fixture(name="servers")
def own_servers(tmp_path: Path) -> Iterator[dict[str, Server]]:
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
