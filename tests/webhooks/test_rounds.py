"""Rounds: attempts that finish close together are recorded by one round (one commit),
so their endpoint's places are freed together."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.processes import wait_until
from tests.webhooks.conftest import Scene
from tests.webhooks.test_delivery import award


def recorded() -> tuple[float, float]:
    """(rounds that recorded attempts, attempts they recorded) so far in this process."""
    count = REGISTRY.get_sample_value("bricqs_dispatcher_round_records_count")
    total = REGISTRY.get_sample_value("bricqs_dispatcher_round_records_sum")
    return count or 0.0, total or 0.0


def test_attempts_finishing_together_are_recorded_by_one_round(scene: Scene) -> None:
    # The first request is answered at once, the three others a moment later: without
    # gathering, the first would be recorded by a round of its own.
    endpoint = scene.subscribe(
        "/together", lambda n: (200, {}, 0.0 if n == 0 else 0.3), ["points.awarded"]
    )
    # Messages earlier tests left pending in the shared outbox would be recorded too.
    scene.db.execute(
        "UPDATE webhook_messages SET status = 'failed', finished_at = now()"
        " WHERE status = 'pending'"
    )
    for n in range(4):
        award(scene.hooks, f"t{n}")
    rounds_before, attempts_before = recorded()
    # A window far longer than the stagger: the test does not depend on the machine's pace.
    with scene.dispatcher(gather_seconds=5.0):
        wait_until(
            lambda: [s for s, _ in scene.statuses(endpoint)] == ["delivered"] * 4, 20, "all four"
        )
    rounds, attempts = recorded()
    assert (rounds - rounds_before, attempts - attempts_before) == (1, 4)
