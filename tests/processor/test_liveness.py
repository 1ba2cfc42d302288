"""`/health/live` follows the consume loop: it fails while the loop is stuck on a wait
that never ends, and passes again once the loop moves."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from bricqs_devstack.servers import Server
from bricqs_processor.liveness import Heartbeat
from bricqs_processor.settings import ProcessorSettings
from tests.conftest import make_tenant
from tests.processor.conftest import (
    Feeder,
    ProcessorFactory,
    envelope,
    exactly_once,
    frozen,
    stored,
    wait_until,
    xadd_envelopes,
)

pytestmark = pytest.mark.slow


def live(processor_url: str) -> httpx.Response:
    return httpx.get(f"{processor_url}/health/live", timeout=5)


def test_live_fails_while_a_frozen_database_wedges_the_loop_and_passes_once_it_moves(
    own_processors: ProcessorFactory, redis_client: redis.Redis, own_postgres: Server
) -> None:
    tenant = make_tenant(own_postgres.url)
    processor = own_processors.start(REDIS_TIMEOUT_MS="1000")
    # Events keep coming, so the loop always has a batch to store soon after the freeze.
    feeder = Feeder(redis_client, tenant, 100_000, chunk=20, interval=0.05)
    feeder.start()
    wait_until(lambda: stored(own_postgres.url, tenant.project_id).events > 0, 20, "commits")
    assert live(processor.url).status_code == 200
    # A frozen server keeps its connections open and answers nothing: the batch in
    # hand waits on it with no end (the rollback after the batch timeout included),
    # while the health server, on the same event loop, still answers.
    with frozen(own_postgres):
        stale = wait_until(
            lambda: (answer := live(processor.url)).status_code == 503 and answer,
            30,
            "live to fail while the loop is wedged",
            own_processors.logs,
        )
        assert stale.json()["status"] == "stalled"
        assert stale.json()["heartbeat_age_seconds"] > stale.json()["bound_seconds"]
        assert processor.alive()
    wait_until(
        lambda: live(processor.url).status_code == 200,
        30,
        "live to pass once the loop moves again",
        own_processors.logs,
    )
    feeder.stop()
    event_ids = feeder.finish()
    wait_until(
        lambda: exactly_once(stored(own_postgres.url, tenant.project_id), len(event_ids)),
        60,
        "every event stored once after the thaw",
        own_processors.logs,
    )


def test_live_keeps_passing_through_a_database_outage_longer_than_its_bound(
    own_processors: ProcessorFactory, redis_client: redis.Redis, own_postgres: Server
) -> None:
    tenant = make_tenant(own_postgres.url)
    processor = own_processors.start(REDIS_TIMEOUT_MS="1000")
    bound = live(processor.url).json()["bound_seconds"]
    own_postgres.stop()
    # A batch in hand that cannot be stored: the loop retries it for the whole outage.
    xadd_envelopes(redis_client, [envelope(tenant, i) for i in range(20)])
    stopped = time.monotonic()
    answers: list[int] = []

    def outage_outlasted_the_bound() -> bool:
        answers.append(live(processor.url).status_code)
        return time.monotonic() - stopped > 1.5 * bound

    wait_until(outage_outlasted_the_bound, 3 * bound, "the outage to outlast the bound")
    # The loop was retrying all along, past the bound, not idle.
    retried = processor.metrics()['bricqs_processor_failures_total{dependency="database"}']
    wait_until(
        lambda: (
            processor.metrics()['bricqs_processor_failures_total{dependency="database"}'] > retried
        ),
        10,
        "another retry of the batch in hand",
        own_processors.logs,
    )
    answers.append(live(processor.url).status_code)
    assert set(answers) == {200}, answers


def test_a_heartbeat_is_stale_only_past_its_bound() -> None:
    now = [100.0]
    heartbeat = Heartbeat(5.0, clock=lambda: now[0])
    now[0] += 5.0
    assert heartbeat.alive()
    now[0] += 0.001
    assert not heartbeat.alive()
    heartbeat.beat()
    assert heartbeat.alive() and heartbeat.age() == 0.0


def test_the_heartbeat_bound_outlasts_every_wait_the_loop_can_make_in_a_row() -> None:
    settings = ProcessorSettings(
        block_ms=1_000,
        redis_timeout_ms=2_000,
        database_timeout_ms=3_000,
        batch_timeout_ms=4_000,
        statement_timeout_ms=1_000,
        claim_min_idle_ms=10_000,
        backoff_max_ms=5_000,
    )
    # A blocking read that times out, a connection wait and a batch that both run to
    # their bounds, then the longest backoff: slow, but moving.
    longest_step = (1_000 + 2_000) + (3_000 + 4_000) + 5_000
    assert settings.heartbeat_bound_seconds() * 1000 > longest_step
