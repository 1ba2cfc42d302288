"""Crashes, replicas and outages: every accepted event is stored exactly once."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from bricqs.stream import CONSUMER_GROUP, dead_letter_key, stream_key
from bricqs_devstack.servers import Server, restart
from tests.conftest import Tenant, make_tenant
from tests.processor.conftest import (
    FAST,
    Feeder,
    Processor,
    ProcessorFactory,
    add_points_rule,
    envelope,
    event_count,
    exactly_once,
    pending,
    points,
    stored,
    stored_event_ids,
    wait_until,
    xadd_envelopes,
)

pytestmark = pytest.mark.slow

STREAM = stream_key(0)
CLAIM_MIN_IDLE = int(FAST["CLAIM_MIN_IDLE_MS"]) / 1000


def redis_clock_moves(client: redis.Redis, seconds: float) -> None:
    """Wait until Redis's clock, the one that measures how long entries are idle, has
    moved on by `seconds`."""
    start = redis_now(client)
    wait_until(lambda: redis_now(client) >= start + seconds, seconds + 10, "Redis's clock")


def redis_now(client: redis.Redis) -> float:
    seconds, microseconds = client.time()
    return seconds + microseconds / 1e6


def advances(processor: Processor, sample: str, by: int = 1) -> Callable[[], bool]:
    """A predicate: `sample` of the processor's metrics rose by `by` since now."""
    start = processor.metrics()[sample]
    return lambda: processor.metrics()[sample] >= start + by


def all_settled(client: redis.Redis, streams: list[str]) -> bool:
    """Nothing pending in any stream, nothing dead-lettered."""
    return all(
        pending(client, s) == 0 and client.xlen(dead_letter_key(int(s[-2]))) == 0 for s in streams
    )


def test_processor_killed_mid_batch_repeatedly_loses_and_duplicates_nothing(
    processors: ProcessorFactory,
    redis_client: redis.Redis,
    postgres_server: Server,
    tenant: Tenant,
) -> None:
    # Crash-looping victims reclaim and are killed again, so deliveries climb: keep the
    # dead-letter limit out of the way, this test is about recovery.
    common = {"MAX_DELIVERIES": "1000"}
    # Points are an increment: counting an event twice would show in the total.
    add_points_rule(postgres_server.url, tenant, "custom.event_0", 3)
    survivor = processors.start(**common)
    feeder = Feeder(redis_client, tenant, 200_000, chunk=200, interval=0.03)
    feeder.start()
    rng = random.Random(7)
    orphaned = []
    for _ in range(4):
        victim = processors.start(BATCH_SIZE="100", **common)
        # Kill it while it holds entries it has not acknowledged: as soon as it holds a
        # full read or, failing that within a few seconds, any.
        deadline = time.monotonic() + rng.uniform(2, 4)
        while time.monotonic() < deadline and pending(redis_client, STREAM, victim.name) < 50:
            time.sleep(0.001)
        orphaned.append(_freeze_holding_entries(redis_client, victim))
        victim.kill()
    feeder.stop()
    event_ids = feeder.finish()
    assert all(orphaned), f"some kill landed outside a batch: {orphaned}"

    n = len(event_ids)
    wait_until(
        lambda: (
            exactly_once(stored(postgres_server.url, tenant.project_id), n)
            and all_settled(redis_client, [STREAM])
        ),
        60,
        f"all {n} events stored once and nothing pending",
        processors.logs,
    )
    assert sorted(stored_event_ids(postgres_server.url, tenant.project_id)) == sorted(event_ids)
    earning = len(range(0, n, 3))  # the feeder names event i `event_{i % 3}`
    assert points(postgres_server.url, tenant.project_id) == (earning, 3 * earning)
    assert survivor.metrics()["bricqs_processor_reclaimed_total"] > 0


def _freeze_holding_entries(client: redis.Redis, victim: Processor) -> int:
    """Stop `victim` (SIGSTOP) at a moment it holds entries it has not acknowledged; how
    many. Stopped first, then asked: a batch read as held and acknowledged before the
    kill would make the kill land outside it."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if pending(client, STREAM, victim.name):
            victim.process.send_signal(signal.SIGSTOP)
            held = pending(client, STREAM, victim.name)
            if held:
                return held
            victim.process.send_signal(signal.SIGCONT)
        time.sleep(0.001)
    raise AssertionError(f"processor {victim.name} held no entries for 20 s")


@pytest.mark.parametrize(("replicas", "shards"), [(2, 1), (3, 4)])
def test_replicas_share_the_work_and_store_each_event_once(
    processors: ProcessorFactory,
    redis_client: redis.Redis,
    postgres_server: Server,
    tenant: Tenant,
    replicas: int,
    shards: int,
) -> None:
    started = [
        processors.start(wait=False, STREAM_SHARDS=str(shards), BATCH_SIZE="100")
        for _ in range(replicas)
    ]
    for processor in started:
        processor.wait_ready()
    streams = [stream_key(s) for s in range(shards)]
    # Wait until every replica is blocked in its read, so all compete from the start.
    wait_until(
        lambda: len(redis_client.xinfo_consumers(streams[0], CONSUMER_GROUP)) == replicas,
        20,
        "every replica to join the group",
    )
    feeder = Feeder(redis_client, tenant, 6_000, chunk=100, interval=0.01, shards=shards)
    feeder.start()
    event_ids = feeder.finish()
    n = len(event_ids)
    wait_until(
        lambda: (
            exactly_once(stored(postgres_server.url, tenant.project_id), n)
            and all_settled(redis_client, streams)
        ),
        60,
        f"all {n} events stored once",
        processors.logs,
    )
    per_replica = [p.metrics()['bricqs_processor_events_total{outcome="stored"}'] for p in started]
    assert sum(per_replica) == n
    assert all(count > 0 for count in per_replica), per_replica


def test_postgres_down_longer_than_the_claim_idle_time_loses_duplicates_and_dead_letters_nothing(
    redis_server: Server,
    redis_client: redis.Redis,
    own_postgres: Server,
    tmp_path: Path,
) -> None:
    server = own_postgres
    factory = ProcessorFactory(redis_server.url, server.url, tmp_path)
    # MAX_DELIVERIES=1: a single reclaim of an entry during the outage would dead-letter
    # it. Replicas keep the claim on what they hold and do not reclaim while they
    # cannot reach PostgreSQL, so an outage never counts as a delivery.
    settings = {"BATCH_SIZE": "100", "MAX_DELIVERIES": "1"}
    try:
        tenant = make_tenant(server.url)
        replicas = [factory.start(**settings), factory.start(**settings)]
        feeder = Feeder(redis_client, tenant, 6_000, chunk=100, interval=0.03)
        feeder.start()
        wait_until(lambda: stored(server.url, tenant.project_id).events > 0, 20, "first commits")
        server.stop()  # fast shutdown: sessions are cut mid-transaction
        redis_clock_moves(redis_client, 2 * CLAIM_MIN_IDLE)
        # Each replica still retries the batch it holds, past the claim idle time.
        for processor in replicas:
            wait_until(
                advances(processor, 'bricqs_processor_failures_total{dependency="database"}'),
                10,
                f"{processor.name} to retry its batch",
                factory.logs,
            )
        assert all(p.alive() for p in replicas)
        ready = httpx.get(f"{replicas[0].url}/health/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"] == "ok"
        assert ready.json()["checks"]["postgres"].startswith("error")
        server = restart(server)
        # The rounds that would have reclaimed entries idle through the outage.
        rounds = [advances(p, "bricqs_processor_reclaim_rounds_total", by=2) for p in replicas]
        event_ids = feeder.finish()
        n = len(event_ids)
        wait_until(
            lambda: (
                exactly_once(stored(server.url, tenant.project_id), n)
                and all_settled(redis_client, [STREAM])
                and all(advanced() for advanced in rounds)
            ),
            60,
            f"all {n} events stored once after the restart, two reclaim rounds each",
            factory.logs,
        )
        assert sorted(stored_event_ids(server.url, tenant.project_id)) == sorted(event_ids)
        for processor in replicas:
            metrics = processor.metrics()
            assert metrics['bricqs_processor_failures_total{dependency="database"}'] > 0
            assert metrics["bricqs_processor_reclaimed_total"] == 0
            assert processor.terminate() == 0
    finally:
        factory.stop_all()
        server.stop()


def test_a_batch_stuck_on_a_lock_is_split_so_its_neighbours_commit_and_the_stuck_event_waits(
    processors: ProcessorFactory,
    redis_client: redis.Redis,
    postgres_server: Server,
    tenant: Tenant,
) -> None:
    neighbours = [envelope(tenant, i, participants=1000) for i in range(30)]
    stuck = envelope(tenant, 99, participant_id="locked")
    with psycopg.connect(postgres_server.url) as holder:
        holder.execute(
            "INSERT INTO participants VALUES (%s, 'live', 'locked', now(), now(), 0)",
            (tenant.project_id,),
        )
        holder.commit()
        # Another transaction holds the participant's row: the batch cannot commit.
        holder.execute(
            "SELECT 1 FROM participants WHERE project_id = %s AND participant_id = 'locked'"
            " FOR UPDATE",
            (tenant.project_id,),
        )
        xadd_envelopes(redis_client, [*neighbours[:15], stuck, *neighbours[15:]])
        # A second replica would reclaim (and, with MAX_DELIVERIES=1, dead-letter) the
        # stuck entry if the first one did not keep its claim while it waits.
        first = processors.start(MAX_DELIVERIES="1")
        wait_until(
            lambda: event_count(postgres_server.url, tenant.project_id) == 30,
            30,
            "the neighbours to be stored while the lock is held",
            processors.logs,
        )
        second = processors.start(MAX_DELIVERIES="1")
        # The stuck entry was delivered before its neighbours were stored: once the claim
        # idle time has passed, the second replica's next rounds would have reclaimed it.
        redis_clock_moves(redis_client, CLAIM_MIN_IDLE)
        wait_until(
            advances(second, "bricqs_processor_reclaim_rounds_total", by=2),
            10,
            "two reclaim rounds of the second replica",
            processors.logs,
        )
        assert pending(redis_client) == 1
        assert redis_client.xlen(dead_letter_key(0)) == 0
        holder.rollback()
    wait_until(
        lambda: (
            event_count(postgres_server.url, tenant.project_id) == 31
            and all_settled(redis_client, [STREAM])
        ),
        20,
        "the stuck event to be stored once the lock is gone",
        processors.logs,
    )
    assert first.metrics()['bricqs_processor_events_total{outcome="stored"}'] == 31
    assert second.metrics()["bricqs_processor_reclaimed_total"] == 0
