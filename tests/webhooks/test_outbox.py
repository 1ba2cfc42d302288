"""The transactional outbox: outcomes owe messages to the endpoints subscribed to them,
written in the transaction that commits the outcome."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bricqs.ids import new_event_id
from bricqs.mechanics.cache import RuleCache
from bricqs.pipeline import process_envelopes
from bricqs.schemas import Envelope
from tests.conftest import Story
from tests.webhooks.conftest import subscribe


def owed(db: psycopg.Connection[Any], endpoint_id: str) -> list[tuple[str, str]]:
    rows = db.execute(
        "SELECT fact_type, fact_id FROM webhook_messages WHERE endpoint_id = %s ORDER BY fact_id",
        (endpoint_id,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def outcomes(db: psycopg.Connection[Any], project_id: str, types: set[str]) -> set[str]:
    rows = db.execute(
        "SELECT fact_id FROM facts WHERE project_id = %s AND fact_type = ANY(%s)",
        (project_id, list(types)),
    ).fetchall()
    return {r[0] for r in rows}


def define_points_and_badge(story: Story) -> None:
    story.define(
        "points-rules",
        {
            "code": "buy",
            "name": "Buy",
            "amount": {"fixed": 10},
            "trigger": {"fact_type": "custom.purchase"},
        },
    )
    story.define(
        "badges",
        {
            "code": "first",
            "name": "First",
            "criteria": [{"criterion": {"fact_type": "custom.purchase"}, "threshold": 1}],
        },
    )


def test_each_endpoint_is_owed_the_outcomes_it_subscribed_to(
    hooks: Story, db: psycopg.Connection[Any]
) -> None:
    define_points_and_badge(hooks)
    everything = subscribe(hooks, "http://127.0.0.1:9/all", ["*"])
    badges = subscribe(hooks, "http://127.0.0.1:9/badges", ["badge.awarded"])
    off = subscribe(hooks, "http://127.0.0.1:9/off", ["*"])
    hooks.api.patch(
        f"/api/v1/gamify/admin/webhooks/{off['endpoint_id']}",
        headers=hooks.headers,
        json={"enabled": False},
    )
    hooks.send("purchase", "w1")
    hooks.send("purchase", "w1")

    project = hooks.tenant.project_id
    assert {f for _, f in owed(db, everything["endpoint_id"])} == outcomes(
        db, project, {"points.awarded", "badge.awarded"}
    )
    assert [t for t, _ in owed(db, everything["endpoint_id"])].count("points.awarded") == 2
    assert [t for t, _ in owed(db, badges["endpoint_id"])] == ["badge.awarded"]
    assert owed(db, off["endpoint_id"]) == []


def test_manual_award_and_deduct_owe_their_messages(
    hooks: Story, db: psycopg.Connection[Any]
) -> None:
    endpoint = subscribe(hooks, "http://127.0.0.1:9/manual", ["points.awarded", "points.deducted"])
    for action, amount in (("award", 30), ("deduct", 10)):
        response = hooks.api.post(
            f"/api/v1/gamify/points/{action}",
            headers=hooks.headers,
            json={"participant_id": "m1", "amount": amount},
        )
        assert response.status_code == 200, response.text
    assert sorted(t for t, _ in owed(db, endpoint["endpoint_id"])) == [
        "points.awarded",
        "points.deducted",
    ]


def test_a_rolled_back_batch_leaves_no_message(
    hooks: Story, db: psycopg.Connection[Any], postgres_server: Any
) -> None:
    define_points_and_badge(hooks)
    endpoint = subscribe(hooks, "http://127.0.0.1:9/rollback")
    envelope = Envelope(
        event_id=new_event_id(),
        project_id=hooks.tenant.project_id,
        environment="live",
        participant_id="r1",
        event_name="purchase",
        properties={},
        occurred_at=datetime.now(UTC),
        received_at=datetime.now(UTC),
    )

    async def process_then_roll_back() -> int:
        async with (
            await psycopg.AsyncConnection.connect(postgres_server.url) as conn,
            conn.transaction(force_rollback=True),
        ):
            await process_envelopes(
                conn,
                [envelope],
                idempotency_ttl=timedelta(days=1),
                rules_for=RuleCache(0),
            )
            cursor = await conn.execute(
                "SELECT count(*) FROM webhook_messages WHERE endpoint_id = %s",
                (endpoint["endpoint_id"],),
            )
            row = await cursor.fetchone()
            assert row is not None
            return int(row[0])

    inside = asyncio.run(process_then_roll_back())
    assert inside == 2  # points.awarded and badge.awarded, seen inside the transaction
    assert owed(db, endpoint["endpoint_id"]) == []
    assert outcomes(db, hooks.tenant.project_id, {"points.awarded", "badge.awarded"}) == set()
