"""Retention: delivered messages are purged after their retention, failed ones kept
longer, pending ones never."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bricqs.storage.webhook_outbox import purge_finished
from bricqs_devstack.servers import Server
from tests.conftest import Story
from tests.webhooks.conftest import subscribe
from tests.webhooks.test_delivery import award


def test_purge_keeps_failed_messages_longer_than_delivered_ones(
    hooks: Story, postgres_server: Server, db: psycopg.Connection[Any]
) -> None:
    endpoint = subscribe(hooks, "http://127.0.0.1:9/retention", ["points.awarded"])
    for pid in ("r1", "r2", "r3"):
        award(hooks, pid)
    ids = [
        r[0]
        for r in db.execute(
            "SELECT fact_id FROM webhook_messages WHERE endpoint_id = %s ORDER BY fact_id",
            (endpoint["endpoint_id"],),
        ).fetchall()
    ]
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    for fact_id, status in zip(ids, ("delivered", "failed", "pending"), strict=True):
        db.execute(
            "UPDATE webhook_messages SET status = %s, finished_at = %s"
            " WHERE endpoint_id = %s AND fact_id = %s",
            (
                status,
                ten_days_ago if status != "pending" else None,
                endpoint["endpoint_id"],
                fact_id,
            ),
        )

    async def purge() -> int:
        async with await psycopg.AsyncConnection.connect(
            postgres_server.url, autocommit=True
        ) as conn:
            now = datetime.now(UTC)
            return await purge_finished(
                conn,
                delivered_before=now - timedelta(days=7),
                failed_before=now - timedelta(days=30),
            )

    assert asyncio.run(purge()) >= 1
    left = db.execute(
        "SELECT status FROM webhook_messages WHERE endpoint_id = %s ORDER BY fact_id",
        (endpoint["endpoint_id"],),
    ).fetchall()
    assert [r[0] for r in left] == ["failed", "pending"]
