"""Claims across replicas: the per-endpoint bound counts every replica's leases; a lease
whose dispatcher died is taken again and its lost attempt counted; messages no claim
would take (endpoint deleted, or disabled past the retry schedule) are swept."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import psycopg

from bricqs.storage.webhook_outbox import Attempt, claim_due, record_attempts
from bricqs_dispatcher.schedule import RETRY_HORIZON
from tests.processes import wait_until
from tests.webhooks.conftest import Scene, answer
from tests.webhooks.test_delivery import award


def test_the_per_endpoint_bound_holds_across_two_replicas(scene: Scene) -> None:
    slow = scene.subscribe("/slow", answer(200, delay=3.0), ["points.awarded"])
    for n in range(6):
        award(scene.hooks, f"r{n}")
    bound = {"max_in_flight_per_endpoint": 2, "attempt_timeout_seconds": 10.0}
    with scene.dispatcher(**bound) as first, scene.dispatcher(**bound) as second:
        wait_until(lambda: len(scene.receiver.at("/slow")) >= 2, 20, "the first attempts")
        # Both replicas made rounds with room to spare while the first two were in flight.
        first.wait_rounds(3)
        second.wait_rounds(3)
        assert len(scene.receiver.at("/slow")) == 2
    assert sorted(scene.statuses(slow)) == [("delivered", 1)] * 2 + [("pending", 0)] * 4


def test_a_live_lease_of_another_replica_counts_and_an_expired_one_is_taken_again(
    scene: Scene,
) -> None:
    endpoint = scene.subscribe("/leases", answer(200), ["points.awarded"])
    award(scene.hooks, "l1")
    award(scene.hooks, "l2")
    (leased,) = scene.db.execute(
        "UPDATE webhook_messages SET lease_token = 'another-replica', next_attempt_at = %s"
        " WHERE fact_id = (SELECT min(fact_id) FROM webhook_messages WHERE endpoint_id = %s)"
        " RETURNING fact_id",
        (scene.clock.now + timedelta(minutes=1), endpoint),
    ).fetchone() or (None,)
    with scene.dispatcher(max_in_flight_per_endpoint=1) as dispatcher:
        dispatcher.wait_rounds(3)
        # The other replica's attempt holds the endpoint's only place.
        assert scene.receiver.at("/leases") == []
        scene.clock.advance(61)  # its lease ends: that replica is gone
        wait_until(
            lambda: [s for s, _ in scene.statuses(endpoint)] == ["delivered"] * 2, 20, "both"
        )
    assert {r.headers["webhook-id"] for r in scene.receiver.at("/leases")} >= {leased}
    # The attempt that ended with its dispatcher is counted.
    assert scene.statuses(endpoint) == [("delivered", 2), ("delivered", 1)]


def test_orphans_are_swept(scene: Scene) -> None:
    gone = scene.subscribe("/gone", answer(200), ["points.awarded"])
    off = scene.subscribe("/off", answer(200), ["points.awarded"])
    for pid in ("o1", "o2"):
        award(scene.hooks, pid)
    # An endpoint deleted while a batch that owed it messages was committing.
    scene.db.execute("DELETE FROM webhook_endpoints WHERE endpoint_id = %s", (gone,))
    # A disabled endpoint: one message older than the retry schedule, one recent.
    scene.db.execute("UPDATE webhook_endpoints SET enabled = false WHERE endpoint_id = %s", (off,))
    scene.db.execute(
        "UPDATE webhook_messages SET created_at = %s WHERE fact_id ="
        " (SELECT min(fact_id) FROM webhook_messages WHERE endpoint_id = %s)",
        (scene.clock.now - RETRY_HORIZON - timedelta(minutes=1), off),
    )
    with scene.dispatcher() as dispatcher:
        dispatcher.wait_rounds(2)
    assert scene.statuses(gone) == []
    assert scene.statuses(off) == [("failed", 0), ("pending", 0)]
    (reason,) = scene.db.execute(
        "SELECT last_error FROM webhook_messages WHERE endpoint_id = %s AND status = 'failed'",
        (off,),
    ).fetchone() or (None,)
    assert reason == "the endpoint was disabled until the end of the retry schedule"
    assert scene.receiver.received == []


def test_pipelined_claims_count_every_replicas_leases(scene: Scene) -> None:
    # Claims sent as the dispatcher sends them (pipelined: the second statement does not
    # wait for the first's result), by replicas interleaved on one endpoint.
    scene.db.execute(  # what earlier tests left pending in the shared outbox
        "UPDATE webhook_messages SET status = 'failed', finished_at = now()"
        " WHERE status = 'pending'"
    )
    endpoint = scene.subscribe("/pipelined", answer(200), ["points.awarded"])
    for n in range(3):
        award(scene.hooks, f"p{n}")
    now = scene.clock.now

    async def claim(conn: psycopg.AsyncConnection[object], token: str) -> list[str]:
        claimed = await claim_due(
            conn,
            now=now,
            lease_until=now + timedelta(minutes=1),
            token=token,
            limit=10,
            per_endpoint=2,
        )
        return [m.fact_id for m in await claimed.messages() if m.endpoint_id == endpoint]

    async def replica(token: str) -> list[str]:
        connecting = psycopg.AsyncConnection.connect(scene.database_url)
        async with await connecting as conn, conn.pipeline(), conn.transaction():
            return await claim(conn, token)

    async def interleave() -> tuple[list[str], list[str], list[str], list[str]]:
        async with await psycopg.AsyncConnection.connect(scene.database_url) as first:
            async with first.pipeline(), first.transaction():
                leased = await claim(first, "first")
                # The first replica holds the endpoint: another skips it.
                while_held = await replica("second")
            after = await replica("third")  # the endpoint's two places are taken
            await record_attempts(first, [done(endpoint, leased[0], "first", now)])
            await first.commit()
        return leased, while_held, after, await replica("fourth")

    leased, while_held, after, freed = asyncio.run(interleave())
    assert (len(leased), while_held, after) == (2, [], [])
    assert len(freed) == 1 and freed[0] not in leased


def done(endpoint_id: str, fact_id: str, token: str, at: datetime) -> Attempt:
    """A delivered attempt of a claimed message."""
    return Attempt(
        endpoint_id=endpoint_id,
        fact_id=fact_id,
        token=token,
        status="delivered",
        next_attempt_at=at,
        http_status=200,
        latency_ms=1,
        error=None,
        at=at,
    )
