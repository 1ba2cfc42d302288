"""Processor throughput: pre-fill a stream, start one processor, time the drain.

    uv run python services/processor/bench/drain.py [--events 50000] [--rules 0]

Starts throwaway Redis and PostgreSQL (durable settings: fsync on, synchronous commit),
migrates, creates a project (with `--rules` active points rules on the busiest event
name), XADDs the envelopes, then runs `bricqs-processor` as a subprocess and reports
events per second between its first and its last commit (start-up excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psycopg
import redis

from bricqs.devstack import free_port, start_postgres, start_redis
from bricqs.ids import new_event_id
from bricqs.mechanics.definitions import Amount, PointsRule, Trigger
from bricqs.schemas import Envelope, encode_envelope
from bricqs.storage import tenants
from bricqs.storage.mechanics import Tenant, create_definition
from bricqs.storage.migrate import migrate
from bricqs.stream import stream_key


def envelopes(project_id: str, count: int) -> list[bytes]:
    now = datetime.now(UTC)
    return [
        encode_envelope(
            Envelope(
                event_id=new_event_id(),
                project_id=project_id,
                environment="live",
                event_name=f"event_{i % 5}",
                participant_id=f"user_{i % 1000}",
                properties={"amount": i % 100, "plan": "pro", "tags": ["a", "b"]},
                occurred_at=now,
                received_at=now,
            )
        )
        for i in range(count)
    ]


async def setup_project(database_url: str, rules: int) -> str:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        project = await tenants.create_project(conn, "bench")
        for n in range(rules):
            rule = PointsRule(
                code=f"rule-{n}",
                name=f"rule {n}",
                trigger=Trigger(fact_type="custom.event_0"),
                amount=Amount(fixed=1 + n),
            )
            await create_definition(
                conn,
                Tenant(project.project_id, "live"),
                "points_rule",
                rule.code,
                rule.status,
                msgspec.json.encode(rule).decode(),
            )
        return project.project_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rules", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bricqs-bench-"))
    redis_server = start_redis(root / "redis")
    postgres = start_postgres(root / "postgres", fsync=True)
    processor = None
    try:
        migrate(postgres.url)
        project_id = asyncio.run(setup_project(postgres.url, args.rules))
        client = redis.Redis.from_url(redis_server.url)
        payloads = envelopes(project_id, args.events)
        for start in range(0, len(payloads), 5_000):
            pipe = client.pipeline(transaction=False)
            for payload in payloads[start : start + 5_000]:
                pipe.xadd(stream_key(0), {"e": payload})
            pipe.execute()

        env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "DATABASE_URL": postgres.url,
            "METRICS_PORT": str(free_port()),
            "BATCH_SIZE": str(args.batch_size),
            "LOG_LEVEL": "WARNING",
        }
        processor = subprocess.Popen([sys.executable, "-m", "bricqs_processor.main"], env=env)
        with psycopg.connect(postgres.url, autocommit=True) as db:

            def count() -> int:
                row = db.execute("SELECT count(*) FROM events").fetchone()
                return int(row[0]) if row else 0

            first = 0
            while (first := count()) == 0:
                time.sleep(0.005)
            started = time.perf_counter()
            while (done := count()) < args.events:
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
        rate = (done - first) / elapsed
        print(
            f"{args.events} events, batch {args.batch_size}, {args.rules} rule(s):"
            f" {done - first} events in {elapsed:.2f} s after the first commit"
            f" = {rate:,.0f} events/s"
        )
    finally:
        if processor is not None:
            processor.terminate()
            processor.wait(30)
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
