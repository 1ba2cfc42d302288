"""When a transaction may start (`lanes.Lanes`): at most as many at once as there are
lanes, never while another running one holds one of its participants, never ahead of an
earlier one that shares a participant; and, through a real processor, a full read's
successor stored while one lane of it still waits."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
import redis

from bricqs.storage.locks import lock_participants
from bricqs_devstack.servers import Server
from bricqs_processor.lanes import Lane, Lanes
from tests.conftest import Tenant
from tests.processor.conftest import (
    ProcessorFactory,
    envelope,
    pending,
    stored_event_ids,
    wait_until,
    xadd_envelopes,
)

pytestmark = pytest.mark.slow


def keys(*names: str) -> frozenset[tuple[str, str, str]]:
    return frozenset(("p", "live", name) for name in names)


async def granted_now(lane: Lane) -> bool:
    return await lane.granted(0)


def test_no_more_run_at_once_than_there_are_lanes() -> None:
    async def scenario() -> None:
        lanes = Lanes(2)
        first, second, third = (lanes.enter(keys(name)) for name in "abc")
        assert [await granted_now(lane) for lane in (first, second, third)] == [True, True, False]
        second.release()
        assert await granted_now(third)

    asyncio.run(scenario())


def test_a_run_waits_for_a_running_one_that_holds_its_participant_and_others_go_first() -> None:
    async def scenario() -> None:
        lanes = Lanes(3)
        running = lanes.enter(keys("a", "b"))
        sharing = lanes.enter(keys("b", "c"))
        apart = lanes.enter(keys("d"))
        assert await granted_now(running)
        assert not await granted_now(sharing)  # a lane is free, but "b" is held
        assert await granted_now(apart)  # nothing of it is held: it goes first
        running.release()
        assert await granted_now(sharing)

    asyncio.run(scenario())


def test_a_run_never_overtakes_an_earlier_one_that_shares_a_participant() -> None:
    async def scenario() -> None:
        lanes = Lanes(3)
        holder = lanes.enter(keys("a"))
        earlier = lanes.enter(keys("a", "b"))  # waits for "a"
        later = lanes.enter(keys("b"))  # "b" is free, but the earlier run wants it first
        assert await granted_now(holder)
        assert not await granted_now(earlier)
        assert not await granted_now(later)
        holder.release()
        assert await granted_now(earlier)
        assert not await granted_now(later)
        earlier.release()
        assert await granted_now(later)

    asyncio.run(scenario())


def test_a_run_that_leaves_the_line_no_longer_holds_anyone_back() -> None:
    async def scenario() -> None:
        lanes = Lanes(1)
        holder = lanes.enter(keys("a"))
        gave_up = lanes.enter(keys("b"))
        after = lanes.enter(keys("b"))
        assert not await granted_now(gave_up)
        gave_up.release()  # e.g. its entries were acknowledged by someone else
        holder.release()
        assert await granted_now(after)

    asyncio.run(scenario())


def test_a_full_reads_successor_is_stored_while_one_lane_of_it_waits(
    processors: ProcessorFactory,
    redis_client: redis.Redis,
    postgres_server: Server,
    tenant: Tenant,
) -> None:
    """Two full reads with different participants; the test holds the advisory lock of one
    participant of the first, so that read's lane holding it cannot commit. The second
    read is read ahead and its transactions take the free lanes: it is stored before the
    lock is released. Before reading ahead, a read waited for all of the previous one."""
    read = 600  # 3 lanes of about LANE_SIZE each; a read is half of BATCH_SIZE
    first = [envelope(tenant, i, participants=30) for i in range(read)]
    second = [envelope(tenant, i, participant_id=f"later_{i % 30}") for i in range(read, 2 * read)]
    xadd_envelopes(redis_client, first + second)
    blocked = first[0].participant_id

    async def while_blocked() -> None:
        """Hold `blocked`'s lock as every writer takes it, and wait meanwhile."""
        async with await psycopg.AsyncConnection.connect(postgres_server.url) as holder:
            await lock_participants(holder, [(tenant.project_id, "live", blocked)])
            processors.start(BATCH_SIZE=str(2 * read))
            wanted = {e.event_id for e in second}
            await asyncio.to_thread(
                wait_until,
                lambda: wanted <= set(stored_event_ids(postgres_server.url, tenant.project_id)),
                60,
                "the second read stored while the first waits for a participant's lock",
                processors.logs,
            )
            stored = set(stored_event_ids(postgres_server.url, tenant.project_id))
            assert not {e.event_id for e in first if e.participant_id == blocked} & stored
            await holder.rollback()  # releases the lock

    asyncio.run(while_blocked())
    wait_until(
        lambda: (
            pending(redis_client) == 0
            and len(stored_event_ids(postgres_server.url, tenant.project_id)) == 2 * read
        ),
        60,
        "every event stored and acknowledged",
        processors.logs,
    )
    assert sorted(stored_event_ids(postgres_server.url, tenant.project_id)) == sorted(
        e.event_id for e in first + second
    )
