"""One reader per shard, with the entries in hand bounded over all shards: a processor
whose database stalls holds at most BATCH_SIZE entries, however many shards it reads."""

from __future__ import annotations

import pytest
import redis

from bricqs.stream import stream_key
from bricqs_devstack.servers import Server
from bricqs_processor.consumer import per_shard_count
from tests.conftest import Tenant
from tests.processor.conftest import (
    ProcessorFactory,
    envelope,
    frozen,
    pending,
    wait_until,
    xadd_envelopes,
)

SHARDS = 4
BATCH = 40


def test_a_shard_reads_its_share_of_the_batch_size_and_at_least_one_entry() -> None:
    assert per_shard_count(1_000, 1) == 1_000
    assert per_shard_count(1_000, 16) * 16 <= 1_000
    assert per_shard_count(10, 16) == 1


@pytest.mark.slow
def test_a_stalled_processor_holds_at_most_batch_size_entries_over_all_shards(
    own_processors: ProcessorFactory,
    own_postgres: Server,
    redis_client: redis.Redis,
    tenant: Tenant,
) -> None:
    xadd_envelopes(
        redis_client, [envelope(tenant, i, participants=200) for i in range(400)], shards=SHARDS
    )
    with frozen(own_postgres):
        processor = own_processors.start(
            wait=False, STREAM_SHARDS=str(SHARDS), BATCH_SIZE=str(BATCH), DATABASE_POOL_SIZE="3"
        )
        held = [stream_key(s) for s in range(SHARDS)]

        def every_shard_read() -> bool:
            try:
                return all(pending(redis_client, s) == BATCH // SHARDS for s in held)
            except redis.ResponseError:  # no group yet
                return False

        wait_until(every_shard_read, 30, "every shard's reader to take its share", processor.log)
        # The readers retry their stalled batches; more rounds take no more entries.
        retries = 'bricqs_processor_failures_total{dependency="database"}'

        def retried_twice_more() -> bool:
            return processor.metrics().get(retries, 0) >= before + 2

        before = processor.metrics().get(retries, 0)
        wait_until(retried_twice_more, 30, "two more rounds of retries", processor.log)
        assert sum(pending(redis_client, s) for s in held) == BATCH
