"""`python -m bench.client`: what the Python client costs and how fast it sends.

    uv run --locked python -m bench.client [--seconds 8] [--events 80000] [--rounds 3]

Measures, in one run (the machine is shared: compare the ratios, not the figures):
- the cost of `track()` on the caller's thread: with the sender idle (queue only) and
  while the background sender is posting to a live ingest;
- events/s the client sustains to one Granian ingest worker (track as fast as one
  thread can, then `close()`), with 1 and 2 senders, against wrk posting prepared
  100-event batch bodies (16 connections) made as the client makes them (an idempotency
  key and a timestamp on every event, so the ingest records each key too), in
  alternating rounds; and, for context, wrk with the ingest benchmark's bodies (no keys).
Prints one JSON object; the ratio client / wrk with keyed bodies is what issue 16 asks
about (goal 0.8).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from bench import workload
from bench.load import wrk
from bench.stack import Stack
from bricqs_client import Client, Options

BATCH = "/api/v1/ingest/events/batch"


def track_cost(n: int, ingest_url: str | None, key: str) -> dict[str, float]:
    """Microseconds per `track()` call: the calling thread's CPU time (its own cost) and
    wall time (which also counts waiting for the GIL while the sender runs)."""
    events = workload.events(n)
    if ingest_url is None:
        # Nothing listens there: the sender's first request is refused and it then waits
        # out a long backoff, so only the queue is timed.
        options = Options(
            max_queue_size=n + 1,
            flush_interval=3600,
            backoff_initial=3600,
            backoff_max=3600,
            max_retry_seconds=7200,
        )
        client = Client(key, ingest_url="http://127.0.0.1:9", options=options)
    else:
        client = Client(key, ingest_url=ingest_url, options=Options(max_queue_size=n + 1))
    start, cpu = time.perf_counter(), time.thread_time()
    for event in events:
        client.track(**event)
    cpu, elapsed = time.thread_time() - cpu, time.perf_counter() - start
    client.close(timeout=0 if ingest_url is None else 120)
    return {"cpu_us": round(cpu / n * 1e6, 2), "wall_us": round(elapsed / n * 1e6, 2)}


def client_rate(
    ingest_url: str, key: str, events: list[dict[str, Any]], senders: int
) -> dict[str, Any]:
    """Events/s from the first `track()` until `close()` has every event settled, and the
    client process's CPU time per event."""
    client = Client(
        key, ingest_url=ingest_url, options=Options(senders=senders, max_queue_size=len(events) + 1)
    )
    start, cpu = time.perf_counter(), time.process_time()
    for event in events:
        client.track(**event)
    client.close(timeout=600)
    cpu, elapsed = time.process_time() - cpu, time.perf_counter() - start
    tally = client.tally
    return {
        "senders": senders,
        "events": len(events),
        "seconds": round(elapsed, 3),
        "events_per_second": round(tally.delivered / elapsed, 1),
        # The client's whole CPU per event (caller and senders): on a small host it is
        # taken from the server's share, which wrk (in C) hardly touches.
        "client_cpu_us_per_event": round(cpu / len(events) * 1e6, 2),
        "failed": tally.failed,
    }


def keyed_bodies(n: int, round_: int, size: int = 100) -> list[bytes]:
    """Batch bodies as the client makes them: a unique key and a timestamp per event."""
    encode = msgspec.json.Encoder().encode
    now = datetime.now(UTC)
    pool = workload.events(n * size, seed=5)
    bodies = []
    for i in range(n):
        chunk = [
            {**e, "idempotency_key": f"bench-{round_}-{i}-{j}", "timestamp": now}
            for j, e in enumerate(pool[i * size : (i + 1) * size])
        ]
        bodies.append(encode({"events": chunk}))
    return bodies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.client")
    parser.add_argument("--seconds", type=float, default=8, help="wrk run length")
    parser.add_argument("--events", type=int, default=80_000, help="events per client run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk/client rounds, interleaved")
    parser.add_argument("--track-events", type=int, default=100_000, help="calls timed per case")
    parser.add_argument("--redis-url", help="use this Redis (its stream is emptied)")
    parser.add_argument("--database-url", help="use this PostgreSQL (migrated)")
    args = parser.parse_args(argv)
    stack = Stack.start(args.redis_url, args.database_url)
    try:
        project = stack.project("bench-client")
        port, child = stack.granian("bricqs_ingest.app:create_app")
        url = f"http://127.0.0.1:{port}"
        results: dict[str, Any] = {
            "track_queue_only": track_cost(args.track_events, None, project.key),
        }
        stack.reset_stream()
        results["track_while_sending"] = track_cost(args.track_events, url, project.key)
        stack.reset_stream()
        plain = wrk(
            port,
            BATCH,
            project.key,
            workload.batch_bodies(100),
            connections=16,
            seconds=args.seconds,
        )
        results["wrk_plain_no_keys"] = plain.as_dict(100)
        stack.reset_stream()
        events = workload.events(args.events, seed=7)
        rounds = []
        # Rounds alternate wrk and client, so a noisy neighbour hits both alike; every
        # wrk round has keys of its own (a repeated key is a cheaper duplicate).
        for n in range(args.rounds):
            # Enough distinct bodies that wrk never repeats a key within the round.
            bodies = keyed_bodies(max(200, int(args.seconds * 600)), n)
            keyed = wrk(port, BATCH, project.key, bodies, connections=16, seconds=args.seconds)
            del bodies
            stack.reset_stream()
            row: dict[str, Any] = {"wrk_keyed_events_per_second": round(keyed.rate * 100, 1)}
            for senders in (1, 2):
                row[f"client_{senders}_sender"] = client_rate(url, project.key, events, senders)
                stack.reset_stream()
            best = max(row[f"client_{s}_sender"]["events_per_second"] for s in (1, 2))
            row["ratio_best_client_to_wrk_keyed"] = round(best / (keyed.rate * 100), 3)
            print(f"  round {n}: {row}", file=sys.stderr)
            rounds.append(row)
        results["rounds"] = rounds
        ratios = sorted(r["ratio_best_client_to_wrk_keyed"] for r in rounds)
        results["median_ratio_client_to_wrk_keyed"] = ratios[len(ratios) // 2]
        stack.stop(child)
    finally:
        stack.close()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
