"""Historical imports in the processor: read with what live traffic leaves, stored on the
same exactly-once path, their outcomes recorded without webhooks, and the totals the same
whatever the interleaving of a participant's live and imported events."""

from __future__ import annotations

import asyncio
import os
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest
import redis

from bricqs.facts import HISTORICAL_MARK
from bricqs.schemas import Envelope, encode_envelope
from bricqs.storage.tenants import Tenant as MechanicsTenant
from bricqs.storage.webhooks import EVENT_TYPES, create_endpoint
from bricqs.stream import CONSUMER_GROUP, historical_stream_key, shard_for, stream_key
from bricqs.webhook_secrets import SecretBox
from bricqs_devstack.servers import Server
from bricqs_processor.consumer import StreamConsumer
from bricqs_processor.entries import Entry
from bricqs_processor.main import make_pool, make_redis
from bricqs_processor.priority import ImportGate, ImportPriority
from bricqs_processor.settings import ProcessorSettings
from tests.conftest import Tenant
from tests.mechanics.test_exactly_once import make_envelopes, run, setup_tenant, split
from tests.processor.conftest import (
    ProcessorFactory,
    add_points_rule,
    envelope,
    pending,
    points,
    stored,
    wait_until,
)
from tests.processor.schedule_helpers import rounds
from tests.readback import snapshot

HISTORICAL = historical_stream_key(0)
LIVE = stream_key(0)


# ---------------------------------------------------------------------------------------
# The reading policy (pure)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_empty_historical_stream_is_looked_at_again_only_after_the_poll_interval() -> None:
    clock = Clock()
    priority = ImportPriority(batch_size=50, poll_seconds=1.0, clock=clock)
    assert priority.wait_seconds() == 0
    priority.found(50)
    assert priority.wait_seconds() == 0  # an import under way: read on at once
    priority.found(0)
    assert priority.wait_seconds() == 1.0
    clock.now += 0.75
    assert priority.wait_seconds() == 0.25
    clock.now += 0.25
    assert priority.wait_seconds() == 0


def test_after_each_historical_batch_the_import_rests_as_long_as_it_took() -> None:
    clock = Clock()
    priority = ImportPriority(batch_size=50, poll_seconds=1.0, clock=clock)
    priority.found(50)
    priority.stored(0.2)
    assert priority.wait_seconds() == pytest.approx(0.2)
    clock.now += 0.2
    assert priority.wait_seconds() == 0


@pytest.mark.parametrize(("ratio", "rest"), [(0.0, 0.0), (0.5, 0.1), (3.0, 0.6)])
def test_the_rest_after_a_batch_is_the_rest_ratio_times_the_batch(
    ratio: float, rest: float
) -> None:
    clock = Clock()
    priority = ImportPriority(batch_size=50, poll_seconds=1.0, rest_ratio=ratio, clock=clock)
    priority.found(50)
    priority.stored(0.2)
    assert priority.wait_seconds() == pytest.approx(rest)


def test_the_import_gate_opens_only_once_a_live_read_with_room_is_stored() -> None:
    async def states() -> list[bool]:
        gate = ImportGate()
        seen = [gate.is_open()]  # closed until the live reader has read once
        gate.after_live_read(found=10, asked=500)
        seen.append(gate.is_open())  # closed while those 10 are stored
        gate.after_live_stored()
        seen.append(gate.is_open())
        gate.after_live_read(found=500, asked=500)
        gate.after_live_stored()
        seen.append(gate.is_open())  # a full read: live traffic has no room to spare
        gate.after_live_read(found=0, asked=500)
        gate.after_live_stored()
        seen.append(gate.is_open())
        await asyncio.wait_for(gate.opened(), 1)
        return seen

    assert asyncio.run(states()) == [False, False, True, False, True]


# ---------------------------------------------------------------------------------------
# The processor: live first, imports after


def xadd(client: redis.Redis, stream: str, envelopes: list[Envelope]) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for env in envelopes:
        pipe.xadd(stream, {"e": encode_envelope(env)})
    return [i.decode() for i in pipe.execute()]


def imported(tenant: Tenant, n: int, **overrides: Any) -> Envelope:
    old = datetime.now(UTC) - timedelta(days=90, minutes=n)
    fields: dict[str, Any] = {"occurred_at": old, "historical": True} | overrides
    return envelope(tenant, n, participants=50, **fields)


def stored_at(database_url: str, event_ids: list[str]) -> list[datetime]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT stored_at FROM events WHERE event_id = ANY(%s)", (event_ids,)
        ).fetchall()
    return [r[0] for r in rows]


def messages(database_url: str, project_id: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM webhook_messages WHERE project_id = %s", (project_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def subscribe_everything(database_url: str, tenant: Tenant | MechanicsTenant) -> None:
    async def create() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await create_endpoint(
                conn,
                MechanicsTenant(tenant.project_id, "live"),
                url="http://127.0.0.1:9/hooks",
                event_types=["*"],
                description="",
                enabled=True,
                box=SecretBox(""),
            )

    asyncio.run(create())


class RecordingConsumer(StreamConsumer):
    """The processor's consumer, in this process, noting each batch it stores: (stream,
    entries), in order. `during` runs while the batch numbered `at` is in hand."""

    def __init__(self, *args: Any, total: int, at: int, during: Any) -> None:
        super().__init__(*args)
        self.batches: list[tuple[str, int]] = []
        self.imports_at_once = 0
        """The most historical batches ever in hand at the same time."""
        self._importing_now = 0
        self._total, self._at, self._during = total, at, during

    async def process(self, entries: list[Entry]) -> None:
        self.batches.append((entries[0].stream, len(entries)))
        historical = entries[0].stream.endswith(":historical")
        self._importing_now += historical
        self.imports_at_once = max(self.imports_at_once, self._importing_now)
        if len(self.batches) == self._at:
            await self._during()
        try:
            await super().process(entries)
        finally:
            self._importing_now -= historical
        if sum(n for _, n in self.batches) >= self._total:
            self.stop()


def recorded_batches(
    redis_url: str,
    database_url: str,
    *,
    total: int,
    at: int = 0,
    during: Any = None,
    **settings: Any,
) -> RecordingConsumer:
    """A consumer in this process, run until it has stored `total` entries (its
    `batches`, in order); `during` (an async function of its Redis client) runs while
    batch `at` is in hand."""
    config = ProcessorSettings(
        redis_url=redis_url,
        database_url=database_url,
        block_ms=50,
        consumer_name="recording",
        log_level="WARNING",
        **settings,
    )

    async def scenario() -> RecordingConsumer:
        client = make_redis(config)
        pool = make_pool(config)
        await pool.open()

        async def run_during() -> None:
            if during is not None:
                await during(client)

        consumer = RecordingConsumer(config, client, pool, total=total, at=at, during=run_during)
        try:
            await asyncio.wait_for(consumer.run(), 30)
        finally:
            await pool.close()
            await client.aclose()
        return consumer

    return asyncio.run(scenario())


def test_imports_wait_while_live_reads_come_back_full(
    redis_server: Server, postgres_server: Server, redis_client: redis.Redis, tenant: Tenant
) -> None:
    xadd(redis_client, HISTORICAL, [imported(tenant, i) for i in range(40)])
    xadd(redis_client, LIVE, [envelope(tenant, i, participants=50) for i in range(50)])
    batches = recorded_batches(
        redis_server.url, postgres_server.url, total=90, batch_size=20, historical_batch_size=20
    ).batches
    # Five full live reads (half of BATCH_SIZE each) first: the import reader waits for a
    # read with room.
    assert batches == [(LIVE, 10)] * 5 + [(HISTORICAL, 20)] * 2
    assert stored(postgres_server.url, tenant.project_id).events == 90


def test_live_entries_queued_during_an_import_are_the_next_batch_stored_not_queued_behind_it(
    redis_server: Server, postgres_server: Server, redis_client: redis.Redis, tenant: Tenant
) -> None:
    cap = 20
    xadd(redis_client, HISTORICAL, [imported(tenant, i) for i in range(400)])
    live = [envelope(tenant, i, participants=50) for i in range(30)]

    async def live_arrives(client: Any) -> None:  # all at once (MULTI), as a batch request
        async with client.pipeline(transaction=True) as pipe:
            for env in live:
                pipe.xadd(LIVE, {"e": encode_envelope(env)})
            await pipe.execute()

    batches = recorded_batches(
        redis_server.url,
        postgres_server.url,
        total=430,
        at=3,
        during=live_arrives,
        historical_batch_size=cap,
    ).batches
    # Three historical reads of `cap`; the live events, queued while the third was in
    # hand, are the very next batch (stored by the live reader at once, the import waiting
    # until they are); the import then goes on in reads of at most `cap`.
    assert batches[:3] == [(HISTORICAL, cap)] * 3
    assert batches[3] == (LIVE, 30)
    assert all(stream == HISTORICAL and n <= cap for stream, n in batches[4:])
    assert stored(postgres_server.url, tenant.project_id).events == 430


def test_one_historical_batch_is_stored_at_a_time_however_many_shards(
    redis_server: Server, postgres_server: Server, redis_client: redis.Redis, tenant: Tenant
) -> None:
    shards = 4
    history = [imported(tenant, i) for i in range(400)]
    pipe = redis_client.pipeline(transaction=False)
    for env in history:
        shard = shard_for(env.project_id, env.participant_id, shards)
        pipe.xadd(historical_stream_key(shard), {"e": encode_envelope(env)})
    pipe.execute()
    consumer = recorded_batches(
        redis_server.url,
        postgres_server.url,
        total=400,
        stream_shards=shards,
        historical_batch_size=20,
    )
    assert {stream for stream, _ in consumer.batches} == {
        historical_stream_key(s) for s in range(shards)
    }
    assert consumer.imports_at_once == 1
    assert stored(postgres_server.url, tenant.project_id).events == 400


def test_a_historical_import_is_stored_exactly_once_across_a_killed_processor(
    processors: ProcessorFactory,
    redis_client: redis.Redis,
    postgres_server: Server,
    tenant: Tenant,
) -> None:
    add_points_rule(postgres_server.url, tenant, "custom.event_0", 3)
    subscribe_everything(postgres_server.url, tenant)
    history = [imported(tenant, i) for i in range(3_000)]
    xadd(redis_client, HISTORICAL, history)
    # Delivered twice: the same entries again, as a replay would put them back.
    xadd(redis_client, HISTORICAL, history[:500])
    victim = processors.start(HISTORICAL_BATCH_SIZE="100", MAX_DELIVERIES="1000")
    deadline = time.monotonic() + 20
    while pending(redis_client, HISTORICAL, victim.name) == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    victim.kill()
    orphaned = pending(redis_client, HISTORICAL, victim.name)
    assert orphaned > 0, "the kill landed outside a batch"
    survivor = processors.start(HISTORICAL_BATCH_SIZE="100")
    wait_until(
        lambda: (
            stored(postgres_server.url, tenant.project_id).distinct_events == 3_000
            and pending(redis_client, HISTORICAL) == 0
        ),
        90,
        "the import stored and acknowledged",
        processors.logs,
    )
    assert stored(postgres_server.url, tenant.project_id).events == 3_000
    earning = len(range(0, 3_000, 3))  # event i is named `event_{i % 3}`
    assert points(postgres_server.url, tenant.project_id) == (earning, 3 * earning)
    assert messages(postgres_server.url, tenant.project_id) == 0
    metrics = survivor.metrics()
    assert metrics["bricqs_processor_reclaimed_total"] > 0
    # Imports wait behind live traffic by design: the live lag histogram leaves them out.
    assert metrics.get("bricqs_processor_end_to_end_lag_seconds_count", 0) == 0


# ---------------------------------------------------------------------------------------
# Replicas of their own for imports (PROCESSOR_STREAMS)


def unread(client: redis.Redis, stream: str) -> int:
    """Entries of `stream` the consumer group has not delivered yet."""
    groups = client.xinfo_groups(stream)
    return int(groups[0]["lag"]) if groups else client.xlen(stream)


def test_a_live_replica_leaves_imports_alone_and_a_historical_replica_live_traffic(
    redis_server: Server, postgres_server: Server, redis_client: redis.Redis, tenant: Tenant
) -> None:
    xadd(redis_client, HISTORICAL, [imported(tenant, i) for i in range(40)])
    xadd(redis_client, LIVE, [envelope(tenant, i, participants=50) for i in range(1_000, 1_030)])
    live = recorded_batches(
        redis_server.url, postgres_server.url, total=30, processor_streams="live"
    )
    assert {stream for stream, _ in live.batches} == {LIVE}
    assert unread(redis_client, HISTORICAL) == 40
    xadd(redis_client, LIVE, [envelope(tenant, i, participants=50) for i in range(2_000, 2_010)])
    history = recorded_batches(
        redis_server.url,
        postgres_server.url,
        total=40,
        processor_streams="historical",
        historical_batch_size=20,
    )
    # No live reader opens the gate in a historical replica: it reads at once, and
    # leaves the live stream to the live replicas.
    assert history.batches == [(HISTORICAL, 20)] * 2
    assert unread(redis_client, LIVE) == 10
    assert stored(postgres_server.url, tenant.project_id).events == 70


def test_a_historical_replica_takes_over_what_a_dead_one_left_pending(
    redis_server: Server, postgres_server: Server, redis_client: redis.Redis, tenant: Tenant
) -> None:
    xadd(redis_client, HISTORICAL, [imported(tenant, i) for i in range(30)])
    redis_client.xgroup_create(HISTORICAL, CONSUMER_GROUP, id="0", mkstream=True)
    read: Any = redis_client.xreadgroup(CONSUMER_GROUP, "dead", {HISTORICAL: ">"}, count=30)
    ids = [entry_id for entry_id, _ in read[0][1]]
    # Idle for a minute already, as Redis counts it (past the default CLAIM_MIN_IDLE_MS),
    # still delivered once (JUSTID does not count a delivery).
    redis_client.xclaim(HISTORICAL, CONSUMER_GROUP, "dead", 0, ids, idle=60_000, justid=True)
    survivor = recorded_batches(
        redis_server.url, postgres_server.url, total=30, processor_streams="historical"
    )
    assert survivor.batches == [(HISTORICAL, 30)]
    assert pending(redis_client, HISTORICAL) == 0
    assert stored(postgres_server.url, tenant.project_id).events == 30


# ---------------------------------------------------------------------------------------
# Outcomes without webhooks, and totals whatever the interleaving


def outcome_facts(url: str, tenant: MechanicsTenant) -> list[tuple[str, str, dict[str, Any]]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT fact_type, event_id, properties FROM facts WHERE project_id = %s"
            " AND fact_type NOT LIKE 'custom.%%'",
            (tenant.project_id,),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_outcomes_of_historical_events_are_recorded_and_marked_and_owe_no_webhook(
    postgres_server: Server,
) -> None:
    url = postgres_server.url
    tenant = setup_tenant(url)
    subscribe_everything(url, tenant)
    envelopes = make_envelopes(tenant, 60, seed=11)
    history = {e.event_id for e in envelopes[:40]}
    marked = [msgspec.structs.replace(e, historical=e.event_id in history) for e in envelopes]
    run(url, split(marked, random.Random(12)))

    facts = outcome_facts(url, tenant)
    historical = [f for f in facts if f[1] in history]
    live = [f for f in facts if f[1] not in history]
    # Chains included (a badge's bonus points): every outcome of an import is marked.
    assert {t for t, _, _ in historical} >= {"points.awarded", "badge.awarded"}
    assert all(p.get(HISTORICAL_MARK) is True for _, _, p in historical)
    assert live and not any(HISTORICAL_MARK in p for _, _, p in live)
    with psycopg.connect(url, autocommit=True) as conn:
        owed = conn.execute(
            "SELECT f.event_id FROM webhook_messages m JOIN facts f"
            " ON f.project_id = m.project_id AND f.environment = m.environment"
            " AND f.fact_id = m.fact_id WHERE m.project_id = %s",
            (tenant.project_id,),
        ).fetchall()
    assert owed and not {r[0] for r in owed} & history
    assert len(owed) == len([f for f in live if f[0] in EVENT_TYPES])


def test_totals_are_the_same_whatever_the_interleaving_of_live_and_imported_events(
    postgres_server: Server,
) -> None:
    url = postgres_server.url
    all_live, mixed = setup_tenant(url), setup_tenant(url)
    base = make_envelopes(all_live, 200, seed=21)
    run(url, split(base, random.Random(22)))

    # The same events, a random half of them imported, the imported ones stored after
    # every live one (as a backlogged historical stream would be), each stream in order.
    rng = random.Random(23)
    twin = [
        msgspec.structs.replace(e, project_id=mixed.project_id, historical=rng.random() < 0.5)
        for e in base
    ]
    live = [e for e in twin if not e.historical]
    history = [e for e in twin if e.historical]
    assert live and history
    run(url, split(live, rng) + split(history, rng))

    a, b = snapshot(url, all_live), snapshot(url, mixed)
    for part in ("balances", "badges", "challenges", "streaks", "progress", "distinct"):
        assert a[part] == b[part], part
    # Under a daily cap, which facts get the last points depends on order (see
    # tests/mechanics/test_exactly_once.py); every total above may not.
    assert [f for f in a["facts"] if f[0] != "points.awarded"] == [
        f for f in b["facts"] if f[0] != "points.awarded"
    ]


def test_an_import_leaves_the_clock_silent_about_periods_already_past(
    postgres_server: Server,
) -> None:
    """A daily streak active in May (months ago): live activity is judged by the clock
    (`streak.lost` at the run's end), the same activity imported is not — its periods
    are long past — while the streak's state is the same either way."""
    url = postgres_server.url
    live_tenant, imported_tenant = setup_tenant(url), setup_tenant(url)
    base = make_envelopes(live_tenant, 30, seed=31)
    run(url, [base])
    twin = [
        msgspec.structs.replace(e, project_id=imported_tenant.project_id, historical=True)
        for e in base
    ]
    run(url, [twin])

    def deadlines(tenant: Tenant) -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM streak_state"
                " WHERE project_id = %s AND deadline_period IS NOT NULL",
                (tenant.project_id,),
            ).fetchone()
        assert row is not None
        return int(row[0])

    assert deadlines(live_tenant) > 0 and deadlines(imported_tenant) == 0
    rounds(url, datetime.now(UTC))

    def lost(tenant: Tenant) -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM facts WHERE project_id = %s AND fact_type = 'streak.lost'",
                (tenant.project_id,),
            ).fetchone()
        assert row is not None
        return int(row[0])

    assert lost(live_tenant) > 0 and lost(imported_tenant) == 0
    assert snapshot(url, live_tenant)["streaks"] == snapshot(url, imported_tenant)["streaks"]


def test_an_import_replica_can_lower_its_own_cpu_priority(processors: ProcessorFactory) -> None:
    # make run gives the import replica PROCESSOR_NICE=10, so on a shared machine the
    # kernel favours the live replica's wake-ups over the import's work.
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    nice = processors.start(PROCESSOR_STREAMS="historical", PROCESSOR_NICE="5")
    plain = processors.start(PROCESSOR_STREAMS="live")
    assert os.getpriority(os.PRIO_PROCESS, nice.process.pid) == min(19, ours + 5)
    assert os.getpriority(os.PRIO_PROCESS, plain.process.pid) == ours
