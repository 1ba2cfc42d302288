"""The processor trims its streams, but never below an entry some consumer still holds."""

from __future__ import annotations

import time

import pytest
import redis

from bricqs.stream import CONSUMER_GROUP, stream_key
from bricqs_devstack.servers import Server
from tests.conftest import Tenant
from tests.processor.conftest import (
    ProcessorFactory,
    envelope,
    event_count,
    wait_until,
    xadd_envelopes,
)

pytestmark = pytest.mark.slow

STREAM = stream_key(0)


def test_trimming_keeps_entries_a_stalled_consumer_has_not_acknowledged(
    processors: ProcessorFactory,
    redis_client: redis.Redis,
    postgres_server: Server,
    tenant: Tenant,
) -> None:
    redis_client.xgroup_create(STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    # 40 entries read and acknowledged (by a consumer that is done with them), 30 read by
    # a consumer that then stalls, 30 more left for the processor.
    done = [i for _, i in xadd_envelopes(redis_client, [envelope(tenant, i) for i in range(40)])]
    redis_client.xreadgroup(CONSUMER_GROUP, "finished", {STREAM: ">"}, count=40)
    redis_client.xack(STREAM, CONSUMER_GROUP, *done)
    held = [
        i for _, i in xadd_envelopes(redis_client, [envelope(tenant, i) for i in range(40, 70)])
    ]
    assert (
        len(redis_client.xreadgroup(CONSUMER_GROUP, "stalled", {STREAM: ">"}, count=30)[0][1]) == 30
    )
    xadd_envelopes(redis_client, [envelope(tenant, i) for i in range(70, 100)])

    # The stalled entries must not be reclaimed during this test: a long minimum idle.
    processor = processors.start(TRIM_INTERVAL_MS="100", CLAIM_MIN_IDLE_MS="600000")
    wait_until(
        lambda: event_count(postgres_server.url, tenant.project_id) == 30, 20, "30 events stored"
    )
    # Trimmed down to the stalled consumer's oldest entry, and no further, however often.
    wait_until(lambda: redis_client.xlen(STREAM) == 60, 20, "the acknowledged 40 trimmed")
    time.sleep(0.5)  # five more trim rounds: still nothing of the stalled consumer's goes
    assert redis_client.xlen(STREAM) == 60
    assert processor.metrics()["bricqs_processor_trimmed_total"] == 40
    assert [i.decode() for i, _ in redis_client.xrange(STREAM, count=30)] == held
    assert redis_client.xpending(STREAM, CONSUMER_GROUP)["pending"] == 30

    # Once the stalled consumer acknowledges, everything below the last delivered entry goes.
    redis_client.xack(STREAM, CONSUMER_GROUP, *held)
    wait_until(lambda: redis_client.xlen(STREAM) == 1, 20, "the stream trimmed to its last entry")
    assert processor.metrics()["bricqs_processor_trimmed_total"] == 99
