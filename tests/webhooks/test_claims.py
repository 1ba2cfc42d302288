"""Claims across replicas: the per-endpoint bound counts every replica's leases; a lease
whose dispatcher died is taken again and its lost attempt counted; messages no claim
would take (endpoint deleted, or disabled past the retry schedule) are swept."""

from __future__ import annotations

from datetime import timedelta

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
