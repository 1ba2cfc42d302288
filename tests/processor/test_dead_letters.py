"""Poison entries go to the dead-letter stream, with their reason and original bytes,
without holding back their neighbours; the admin tool lists and replays them."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from bricqs.schemas import encode_envelope
from bricqs.stream import (
    CONSUMER_GROUP,
    DeadLetter,
    dead_letter_key,
    historical_stream_key,
    stream_key,
)
from bricqs_devstack.servers import Server
from bricqs_processor.deadletter import delivery_counts
from bricqs_processor.entries import Entry
from bricqs_processor.recovery import reclaim_stuck
from tests.conftest import Tenant
from tests.processor.conftest import (
    ProcessorFactory,
    envelope,
    event_count,
    pending,
    stored_event_ids,
    wait_until,
    with_async_redis,
    xadd_envelopes,
)

pytestmark = pytest.mark.slow

STREAM = stream_key(0)
DLQ = dead_letter_key(0)


def dead_letters(client: redis.Redis) -> list[tuple[str, DeadLetter]]:
    return [(i.decode(), DeadLetter.from_fields(f)) for i, f in client.xrange(DLQ)]


def test_poison_entries_are_dead_lettered_and_their_neighbours_stored(
    processors: ProcessorFactory,
    redis_client: redis.Redis,
    postgres_server: Server,
    tenant: Tenant,
) -> None:
    redis_client.xgroup_create(STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    # An entry a (crashing) consumer has had delivered 5 times already.
    stuck = envelope(tenant, 1000)
    ((_, stuck_id),) = xadd_envelopes(redis_client, [stuck])
    assert redis_client.xreadgroup(CONSUMER_GROUP, "crashed", {STREAM: ">"}, count=1)
    redis_client.xclaim(STREAM, CONSUMER_GROUP, "crashed", 0, [stuck_id], retrycount=5)

    good = [envelope(tenant, i) for i in range(60)]
    refused = envelope(tenant, 2000, properties={"text": "nul \x00 byte"})
    xadd_envelopes(redis_client, good[:20])
    garbage_id = redis_client.xadd(STREAM, {"e": b"\xc1 not msgpack"}).decode()
    xadd_envelopes(redis_client, good[20:40])
    no_field_id = redis_client.xadd(STREAM, {"other": b"x"}).decode()
    ((_, refused_id),) = xadd_envelopes(redis_client, [refused])
    xadd_envelopes(redis_client, good[40:])

    processor = processors.start(MAX_DELIVERIES="5")
    wait_until(
        lambda: len(dead_letters(redis_client)) == 4 and pending(redis_client) == 0,
        30,
        "four dead letters and nothing pending",
        processors.logs,
    )
    assert sorted(stored_event_ids(postgres_server.url, tenant.project_id)) == sorted(
        e.event_id for e in good
    )
    letters = {letter.message_id: letter for _, letter in dead_letters(redis_client)}
    assert set(letters) == {stuck_id, garbage_id, no_field_id, refused_id}
    assert letters[garbage_id].reason.startswith("decode_error: ")
    assert letters[garbage_id].payload == b"\xc1 not msgpack"
    assert letters[no_field_id].reason.startswith("decode_error: ")
    assert letters[refused_id].reason.startswith("rejected: ")
    assert letters[refused_id].payload == encode_envelope(refused)
    assert letters[stuck_id].reason.startswith("max_deliveries: ")
    assert letters[stuck_id].deliveries == 6
    assert letters[stuck_id].payload == encode_envelope(stuck)
    assert all(letter.stream == STREAM for letter in letters.values())

    metrics = processor.metrics()
    assert metrics['bricqs_processor_dead_lettered_total{reason="decode_error"}'] == 2
    assert metrics['bricqs_processor_dead_lettered_total{reason="rejected"}'] == 1
    assert metrics['bricqs_processor_dead_lettered_total{reason="max_deliveries"}'] == 1
    assert metrics['bricqs_processor_events_total{outcome="stored"}'] == 60


def admin(redis_url: str, *args: str) -> tuple[int, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bricqs.admin", "--json", "--redis-url", redis_url, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode, json.loads(result.stdout)


def test_admin_lists_dead_letters_and_replays_them_exactly_once(
    processors: ProcessorFactory,
    redis_server: Server,
    redis_client: redis.Redis,
    postgres_server: Server,
    tenant: Tenant,
) -> None:
    processor = processors.start()
    already = envelope(tenant, 1)
    xadd_envelopes(redis_client, [already])
    wait_until(lambda: event_count(postgres_server.url, tenant.project_id) == 1, 20, "1 event")

    fresh = envelope(tenant, 2)
    for payload, reason in [
        (encode_envelope(fresh), "rejected: OperationalError: (fixed since)"),
        (encode_envelope(already), "max_deliveries: delivered 6 times, more than 5"),
        (b"\xc1", "decode_error: invalid"),
    ]:
        redis_client.xadd(DLQ, DeadLetter(payload, reason, STREAM, "1-1", 6).fields())  # type: ignore[arg-type]

    code, listed = admin(redis_server.url, "dlq", "list")
    assert code == 0
    entries = listed["entries"]
    assert [e["reason"].split(":")[0] for e in entries] == [
        "rejected",
        "max_deliveries",
        "decode_error",
    ]
    assert entries[0]["event"]["event_id"] == fresh.event_id
    assert entries[0]["event"]["project_id"] == tenant.project_id
    assert entries[2]["event"] is None
    assert {e["shard"] for e in entries} == {0} and {e["deliveries"] for e in entries} == {6}

    code, replayed = admin(redis_server.url, "dlq", "replay", entries[0]["id"], entries[1]["id"])
    assert code == 0
    assert [r["id"] for r in replayed["replayed"]] == [entries[0]["id"], entries[1]["id"]]
    # Replaying the same ids again finds nothing: each was moved once.
    code, again = admin(redis_server.url, "dlq", "replay", entries[0]["id"])
    assert code == 1 and "no dead letter" in again["error"]

    wait_until(
        lambda: (
            event_count(postgres_server.url, tenant.project_id) == 2 and pending(redis_client) == 0
        ),
        20,
        "the replayed event to be stored",
        processors.logs,
    )
    assert sorted(stored_event_ids(postgres_server.url, tenant.project_id)) == sorted(
        [already.event_id, fresh.event_id]
    )
    metrics = processor.metrics()
    assert metrics['bricqs_processor_events_total{outcome="stored"}'] == 2
    assert metrics['bricqs_processor_events_total{outcome="already_stored"}'] == 1

    # The undecodable one goes back to the dead-letter stream when replayed.
    code, replayed = admin(redis_server.url, "dlq", "replay", "--all")
    assert code == 0 and len(replayed["replayed"]) == 1
    wait_until(
        lambda: (
            [e["message_id"] for e in admin(redis_server.url, "dlq", "list")[1]["entries"]]
            == [replayed["replayed"][0]["message_id"]]
        ),
        20,
        "the undecodable entry back in the dead-letter stream, from its new message id",
        processors.logs,
    )
    assert event_count(postgres_server.url, tenant.project_id) == 2


def test_a_dead_letter_goes_back_to_the_stream_it_came_from_live_or_historical(
    redis_server: Server, redis_client: redis.Redis, tenant: Tenant
) -> None:
    live, imported = envelope(tenant, 1), envelope(tenant, 2, historical=True)
    history = historical_stream_key(0)
    for env, origin in [(live, STREAM), (imported, history)]:
        letter = DeadLetter(encode_envelope(env), "rejected: fixed since", origin, "1-1", 6)
        redis_client.xadd(DLQ, letter.fields())  # type: ignore[arg-type]
    code, replayed = admin(redis_server.url, "dlq", "replay", "--all")
    assert code == 0 and len(replayed["replayed"]) == 2
    # An import replayed onto the live stream would be stored ahead of live traffic.
    assert [f[b"e"] for _, f in redis_client.xrange(STREAM)] == [encode_envelope(live)]
    assert [f[b"e"] for _, f in redis_client.xrange(history)] == [encode_envelope(imported)]


def test_admin_dlq_needs_redis_url(redis_server: Server) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bricqs.admin", "dlq", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr


def test_reclaimed_entries_that_went_through_crashes_are_processed_one_by_one(
    processors: ProcessorFactory,
    redis_client: redis.Redis,
    postgres_server: Server,
    tenant: Tenant,
) -> None:
    # Five entries a dying consumer held, already delivered three times each: any of them
    # may be what kills consumers, so each is stored in a transaction of its own.
    redis_client.xgroup_create(STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    suspects = [envelope(tenant, i) for i in range(5)]
    ids = [i for _, i in xadd_envelopes(redis_client, suspects)]
    redis_client.xreadgroup(CONSUMER_GROUP, "crashed", {STREAM: ">"}, count=5)
    redis_client.xclaim(STREAM, CONSUMER_GROUP, "crashed", 0, ids, retrycount=3)

    processor = processors.start()
    wait_until(
        lambda: (
            event_count(postgres_server.url, tenant.project_id) == 5 and pending(redis_client) == 0
        ),
        20,
        "the reclaimed entries to be stored",
        processors.logs,
    )
    metrics = processor.metrics()
    assert metrics["bricqs_processor_reclaimed_total"] == 5
    assert metrics["bricqs_processor_batches_total"] == 5
    assert metrics["bricqs_processor_batch_size_count"] == 5
    assert metrics["bricqs_processor_batch_size_sum"] == 5


def xpending_calls(client: redis.Redis) -> int:
    """How many XPENDING commands this Redis has run (INFO commandstats)."""
    return int(client.info("commandstats").get("cmdstat_xpending", {}).get("calls", 0))


def held_by(client: redis.Redis, tenant: Tenant, consumer: str, count: int) -> list[str]:
    """`count` new entries, delivered to `consumer` and not acknowledged; their ids."""
    client.xgroup_create(STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    ids = [i for _, i in xadd_envelopes(client, [envelope(tenant, i) for i in range(count)])]
    assert client.xreadgroup(CONSUMER_GROUP, consumer, {STREAM: ">"}, count=count)
    return ids


def test_delivery_counts_of_a_reclaimed_page_take_one_round_trip_whatever_others_hold(
    redis_server: Server, redis_client: redis.Redis, tenant: Tenant
) -> None:
    ids = held_by(redis_client, tenant, "busy", 200)
    # Every other entry belongs to a consumer that crashed long ago, after three
    # deliveries; the ones in between to a live one, busy with them right now.
    stuck = ids[::2]
    redis_client.xclaim(
        STREAM, CONSUMER_GROUP, "crashed", 0, stuck, idle=3_600_000, retrycount=3, justid=True
    )

    async def reclaim(client: aioredis.Redis) -> list[list[Entry]]:
        pages = reclaim_stuck(client, STREAM, "rescuer", min_idle_ms=600_000, count=100)
        return [page async for page in pages]

    before = xpending_calls(redis_client)
    pages = with_async_redis(redis_server.url, reclaim)
    calls = xpending_calls(redis_client) - before

    assert [len(page) for page in pages] == [100]
    assert sorted(e.message_id for e in pages[0]) == sorted(stuck)
    assert {e.deliveries for e in pages[0]} == {4}
    # One XPENDING for the page, restricted to the rescuer's entries: the busy
    # consumer's entries in between no longer push the page's own ones out.
    assert calls == 1


def test_delivery_counts_read_past_other_entries_the_consumer_holds_in_the_range(
    redis_server: Server, redis_client: redis.Redis, tenant: Tenant
) -> None:
    ids = held_by(redis_client, tenant, "rescuer", 10)
    redis_client.xclaim(STREAM, CONSUMER_GROUP, "rescuer", 0, [ids[0], ids[9]], retrycount=6)
    asked = [ids[0], ids[5], ids[9], "1-1"]  # the last one was never pending

    counts = with_async_redis(
        redis_server.url, lambda client: delivery_counts(client, STREAM, "rescuer", asked)
    )
    assert counts == {ids[0]: 6, ids[5]: 1, ids[9]: 6}
