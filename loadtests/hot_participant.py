"""How long a sync request of the hottest participant waits for the processor's lock.

    uv run --locked python -m loadtests.hot_participant [--events 20000] [--rounds 3]

A backlog of Pareto-distributed events (common/events.py: about half are `user_0`'s) is
queued, then one processor with the benchmark's 20 rules drains it in full reads while a
probe, every 20 ms, does what the sync endpoint does first: open a transaction and take
`user_0`'s advisory lock (`lock_participants`). Printed: the probe's wait p50/p99/max and
the drain rate, per round. The wait is what a sync request of that participant adds to
its answer when the processor holds the lock for whole transactions. An A/B of two trees:
run it with PYTHONPATH pointing at the other tree's `services/processor/src`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis

from bricqs.ids import new_event_id
from bricqs.schemas import Envelope, encode_envelope
from bricqs.storage.locks import lock_participants
from bricqs.stream import CONSUMER_GROUP, stream_key

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common`, as Locust finds it

from common.events import event
from common.pacing import percentile

HOTTEST = "user_0"


def queue_backlog(redis_url: str, project_id: str, count: int, rng: random.Random) -> None:
    """XADD `count` Pareto-distributed events for the project, in pipelines of 1,000."""
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC)
    for start in range(0, count, 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(1000, count - start)):
            body = event(rng, idempotency_share=0)
            envelope = Envelope(
                event_id=new_event_id(),
                project_id=project_id,
                environment="live",
                event_name=body["event_name"],
                participant_id=body["participant_id"],
                properties=body["properties"],
                occurred_at=now,
                received_at=now,
            )
            pipe.xadd(stream_key(0), {"e": encode_envelope(envelope)})
        pipe.execute()
    client.close()


def drained(redis_url: str) -> bool:
    """Whether the group has read and acknowledged every entry."""
    client = redis.Redis.from_url(redis_url)
    try:
        groups = client.xinfo_groups(stream_key(0))
    finally:
        client.close()
    group = next((g for g in groups if g["name"].decode() == CONSUMER_GROUP), None)
    return group is not None and group["lag"] == 0 and group["pending"] == 0


async def probe(database_url: str, project_id: str, redis_url: str) -> list[float]:
    """Lock waits (s) of `user_0`, every 20 ms, until the backlog is drained."""
    waits: list[float] = []
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        while not await asyncio.to_thread(drained, redis_url):
            started = time.perf_counter()
            async with conn.transaction():
                await lock_participants(conn, [(project_id, "live", HOTTEST)])
                waits.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)
    return waits


def main(argv: list[str] | None = None) -> int:
    """Run the rounds; print one line per round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", default="1000", help="the processor's BATCH_SIZE")
    args = parser.parse_args(argv)

    from bench.rule_engine import TWENTY_RULES
    from bench.stack import Stack

    rng = random.Random(1)
    for round_ in range(args.rounds):
        stack = Stack.start()
        try:
            project = stack.project("hot participant", TWENTY_RULES)
            queue_backlog(stack.redis_url, project.project_id, args.events, rng)
            started = time.perf_counter()
            stack.processor(BATCH_SIZE=args.batch_size)
            waits = asyncio.run(probe(stack.database_url, project.project_id, stack.redis_url))
            seconds = time.perf_counter() - started
            ms = [1000 * w for w in waits]
            print(
                f"round {round_ + 1}: {len(ms)} probes, lock wait of {HOTTEST}"
                f" p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms,"
                f" max {max(ms):.1f} ms; drained {args.events} events in {seconds:.1f} s"
                f" (BATCH_SIZE {args.batch_size})"
                f", {args.events / seconds:.0f}/s",
                flush=True,
            )
        finally:
            stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
