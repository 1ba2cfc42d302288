"""The processor trims its streams, but never below an entry some consumer still holds."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from bricqs.stream import CONSUMER_GROUP, stream_key
from bricqs_devstack.servers import Server
from bricqs_ingest.backlog import measure_backlog
from bricqs_processor.trimming import StreamTrimmer
from tests.conftest import Tenant
from tests.processor.conftest import (
    Processor,
    ProcessorFactory,
    envelope,
    event_count,
    wait_until,
    with_async_redis,
    xadd_envelopes,
)

pytestmark = pytest.mark.slow

STREAM = stream_key(0)
# Redis's stream-node-max-entries (default): trimming removes whole nodes of at most this.
NODE_ENTRIES = 100


def test_trimming_keeps_entries_a_stalled_consumer_has_not_acknowledged(
    processors: ProcessorFactory,
    redis_client: redis.Redis,
    postgres_server: Server,
    tenant: Tenant,
) -> None:
    redis_client.xgroup_create(STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    # 200 entries read and acknowledged (by a consumer that is done with them), 30 read
    # by a consumer that then stalls, 30 more left for the processor.
    done = [i for _, i in xadd_envelopes(redis_client, [envelope(tenant, i) for i in range(200)])]
    redis_client.xreadgroup(CONSUMER_GROUP, "finished", {STREAM: ">"}, count=200)
    redis_client.xack(STREAM, CONSUMER_GROUP, *done)
    held = [
        i for _, i in xadd_envelopes(redis_client, [envelope(tenant, i) for i in range(200, 230)])
    ]
    assert (
        len(redis_client.xreadgroup(CONSUMER_GROUP, "stalled", {STREAM: ">"}, count=30)[0][1]) == 30
    )
    rest = [
        i for _, i in xadd_envelopes(redis_client, [envelope(tenant, i) for i in range(230, 260)])
    ]

    # The stalled entries must not be reclaimed during this test: a long minimum idle.
    processor = processors.start(TRIM_INTERVAL_MS="100", CLAIM_MIN_IDLE_MS="600000")
    wait_until(
        lambda: event_count(postgres_server.url, tenant.project_id) == 30, 20, "30 events stored"
    )
    # Trimmed down towards the stalled consumer's oldest entry (whole macro nodes: some
    # acknowledged entries may stay), and no further, however often.
    wait_until(lambda: redis_client.xlen(STREAM) < 260, 20, "acknowledged entries trimmed")
    after_first = trim_rounds(processor)
    wait_until(lambda: trim_rounds(processor) >= after_first + 2, 20, "two more trim rounds to end")
    length = redis_client.xlen(STREAM)
    assert [i.decode() for i, _ in redis_client.xrange(STREAM, held[0], "+")] == held + rest
    assert 60 <= length <= 60 + NODE_ENTRIES
    assert processor.metrics()["bricqs_processor_trimmed_total"] == 260 - length
    assert redis_client.xpending(STREAM, CONSUMER_GROUP)["pending"] == 30

    # Once the stalled consumer acknowledges, everything goes but the last entry's node.
    redis_client.xack(STREAM, CONSUMER_GROUP, *held)
    acknowledged = trim_rounds(processor)
    wait_until(
        lambda: trim_rounds(processor) >= acknowledged + 2, 20, "two trim rounds since the ack"
    )
    length = redis_client.xlen(STREAM)
    assert 0 < length <= NODE_ENTRIES
    assert redis_client.xrange(STREAM, "-", "+")[-1][0].decode() == rest[-1]
    assert processor.metrics()["bricqs_processor_trimmed_total"] == 260 - length


def trim_rounds(processor: Processor) -> float:
    return processor.metrics()["bricqs_processor_trim_rounds_total"]


def add_entries(client: redis.Redis, count: int) -> list[str]:
    """`count` small entries on the stream (their content does not matter here); ids."""
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        pipe.xadd(STREAM, {"e": str(n)})
    return [i.decode() for i in pipe.execute()]


def read_and_ack(client: redis.Redis, group: str, count: int, acknowledged: int) -> None:
    """Deliver the next `count` entries to `group`, then acknowledge the first
    `acknowledged` of them."""
    ((_, items),) = client.xreadgroup(group, f"{group}-1", {STREAM: ">"}, count=count)
    for start in range(0, acknowledged, 1_000):
        ids = [i for i, _ in items[start:acknowledged][:1_000]]
        client.xack(STREAM, group, *ids)


def trim_until_done(url: str, trimmer_calls: list[int]) -> int:
    """Trim STREAM call after call until a call removes nothing; entries removed.
    `trimmer_calls` receives what each call removed."""

    async def trim(client: aioredis.Redis) -> int:
        trimmer = StreamTrimmer(client)
        while removed := await trimmer.trim(STREAM):
            trimmer_calls.append(removed)
        return sum(trimmer_calls)

    return with_async_redis(url, trim)


def test_one_trim_call_removes_a_bounded_number_of_entries_and_calls_in_a_row_finish(
    redis_server: Server, redis_client: redis.Redis
) -> None:
    redis_client.xgroup_create(STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    ids = add_entries(redis_client, 25_000)
    read_and_ack(redis_client, CONSUMER_GROUP, 25_000, 25_000)

    calls: list[int] = []
    removed = trim_until_done(redis_server.url, calls)

    # Each call is bounded work for Redis (whole macro nodes, LIMIT 10,000), and the calls
    # together remove everything below the last entry but part of its node.
    assert len(calls) >= 3 and all(0 < n <= 10_000 for n in calls), calls
    assert 25_000 - 100 <= removed < 25_000
    assert redis_client.xrange(STREAM, "-", "+", count=1_000)[-1][0].decode() == ids[-1]


def second_group_lagging(client: redis.Redis) -> list[str]:
    """1,000 entries: the processors read and acknowledged them all; a second group
    (a webhook dispatcher, say) read 300 and acknowledged 150 of those. Entry ids."""
    client.xgroup_create(STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    client.xgroup_create(STREAM, "webhooks", id="0")
    ids = add_entries(client, 1_000)
    read_and_ack(client, CONSUMER_GROUP, 1_000, 1_000)
    read_and_ack(client, "webhooks", 300, 150)
    return ids


def test_trimming_keeps_every_entry_a_second_group_has_not_acknowledged(
    redis_server: Server, redis_client: redis.Redis
) -> None:
    ids = second_group_lagging(redis_client)

    removed = trim_until_done(redis_server.url, [])

    kept = [i.decode() for i, _ in redis_client.xrange(STREAM, ids[150], "+")]
    assert kept == ids[150:]
    assert 0 < removed <= 150
    assert redis_client.xlen(STREAM) == 1_000 - removed


def test_backpressure_counts_the_backlog_of_the_slowest_group(
    redis_server: Server, redis_client: redis.Redis
) -> None:
    second_group_lagging(redis_client)
    # The webhooks group: 700 entries not yet delivered, 150 delivered and unacknowledged.
    backlog = with_async_redis(redis_server.url, lambda client: measure_backlog(client, 1))
    assert backlog == 850
