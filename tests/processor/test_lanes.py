"""A large read is stored as several transactions at once, split by participant: every
event is still stored once and counted once, and a poison event in any lane is isolated."""

from __future__ import annotations

import pytest
import redis

from bricqs.stream import dead_letter_key
from bricqs_devstack.servers import Server
from bricqs_processor.entries import Entry
from bricqs_processor.lanes import LANE_SIZE, split_into_lanes
from tests.conftest import Tenant
from tests.processor.conftest import (
    ProcessorFactory,
    add_points_rule,
    envelope,
    pending,
    points,
    stored_event_ids,
    wait_until,
    xadd_envelopes,
)

pytestmark = pytest.mark.slow


def test_lanes_hold_about_lane_size_entries_and_each_participant_in_one_lane(
    tenant: Tenant,
) -> None:
    def entries(n: int) -> list[Entry]:
        return [Entry("s", f"{i}-0", b"", envelope(tenant, i, participants=97)) for i in range(n)]

    assert len(split_into_lanes(entries(LANE_SIZE), most=3)) == 1
    assert len(split_into_lanes(entries(LANE_SIZE + 1), most=3)) == 2
    assert len(split_into_lanes(entries(4 * LANE_SIZE), most=3)) == 3
    assert len(split_into_lanes(entries(4 * LANE_SIZE), most=1)) == 1
    lanes = split_into_lanes(entries(1000), most=3)
    owners: dict[str, int] = {}
    for index, lane in enumerate(lanes):
        ids = [int(e.message_id.split("-")[0]) for e in lane]
        assert ids == sorted(ids)  # stream order kept
        for e in lane:
            assert e.envelope is not None
            assert owners.setdefault(e.envelope.participant_id, index) == index
    assert sum(map(len, lanes)) == 1000


def test_a_large_read_in_several_lanes_stores_and_counts_each_event_once(
    processors: ProcessorFactory,
    redis_client: redis.Redis,
    postgres_server: Server,
    tenant: Tenant,
) -> None:
    add_points_rule(postgres_server.url, tenant, "custom.event_0", 5)
    good = [envelope(tenant, i, participants=40, names=1) for i in range(3 * LANE_SIZE)]
    # Poison in many participants, so that both lanes meet some.
    refused = [
        envelope(tenant, i, participants=40, names=1, properties={"text": "nul \x00"})
        for i in range(8)
    ]
    xadd_envelopes(redis_client, good[:100] + refused[:4] + good[100:] + refused[4:])

    processors.start(BATCH_SIZE="1000")
    wait_until(
        lambda: (
            redis_client.xlen(dead_letter_key(0)) == len(refused) and pending(redis_client) == 0
        ),
        60,
        "the poison dead-lettered and nothing pending",
        processors.logs,
    )
    assert sorted(stored_event_ids(postgres_server.url, tenant.project_id)) == sorted(
        e.event_id for e in good
    )
    assert points(postgres_server.url, tenant.project_id) == (len(good), 5 * len(good))
