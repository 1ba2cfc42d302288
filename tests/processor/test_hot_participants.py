"""A hot participant (more than HOT_CHUNK events in one read) has its events committed in
small transactions of its own, so its advisory lock -- which a sync request of that
participant waits for -- is never held for a whole lane of the batch. Observed through
the transaction id (xmin) of each stored event; exactness is unchanged."""

from __future__ import annotations

from collections import defaultdict

import psycopg
import pytest
import redis

from bricqs_devstack.servers import Server
from bricqs_processor.entries import Entry
from bricqs_processor.lanes import HOT_CHUNK, plan_transactions
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


def test_a_hot_participants_events_are_planned_in_chunks_of_their_own(tenant: Tenant) -> None:
    def who(i: int) -> str:
        return "hot" if i % 2 else f"cold_{i % 50}"

    read = [
        Entry("s", f"{i}-0", b"", envelope(tenant, i, participant_id=who(i)))
        for i in range(10 * HOT_CHUNK)
    ]
    runs = plan_transactions(read, most=3)
    hot = [run for run in runs if all(who(int(e.message_id[:-2])) == "hot" for t in run for e in t)]
    assert len(hot) == 1  # one run: its chunks are committed one after the other
    (chunks,) = hot
    assert [len(chunk) for chunk in chunks] == [HOT_CHUNK] * 5
    ids = [int(e.message_id.split("-")[0]) for chunk in chunks for e in chunk]
    assert ids == sorted(ids)  # stream order kept
    assert sum(len(t) for run in runs for t in run) == len(read)


def test_a_hot_participants_events_never_share_a_transaction_with_the_batch(
    processors: ProcessorFactory,
    redis_client: redis.Redis,
    postgres_server: Server,
    tenant: Tenant,
) -> None:
    add_points_rule(postgres_server.url, tenant, "custom.event_0", 5)
    # Two full reads; every other event is the hot participant's (2.5 chunks of it in
    # each read), the rest spread over 60 participants.
    read = 5 * HOT_CHUNK
    sent = [
        envelope(tenant, i, names=1, participant_id="hot" if i % 2 else f"cold_{i % 60}")
        for i in range(2 * read)
    ]
    xadd_envelopes(redis_client, sent)

    processors.start(BATCH_SIZE=str(read))
    wait_until(
        lambda: (
            pending(redis_client) == 0
            and len(stored_event_ids(postgres_server.url, tenant.project_id)) == len(sent)
        ),
        60,
        "every event stored and acknowledged",
        processors.logs,
    )
    with psycopg.connect(postgres_server.url, autocommit=True) as db:
        rows = db.execute(
            "SELECT xmin::text, participant_id FROM events WHERE project_id = %s",
            (tenant.project_id,),
        ).fetchall()
    participants_of: dict[str, list[str]] = defaultdict(list)
    for xid, participant in rows:
        participants_of[xid].append(participant)
    hot = [members for members in participants_of.values() if "hot" in members]
    assert all(set(members) == {"hot"} for members in hot)
    assert max(len(members) for members in hot) <= HOT_CHUNK
    assert sum(len(members) for members in hot) == len(sent) // 2
    # The other participants are still stored together: a transaction per lane (at most
    # three per read, DATABASE_POOL_SIZE 4 less one).
    cold = [members for members in participants_of.values() if "hot" not in members]
    assert len(cold) <= 2 * 3 and all(len(set(members)) > 1 for members in cold)
    assert points(postgres_server.url, tenant.project_id) == (len(sent), 5 * len(sent))
