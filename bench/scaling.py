"""Scale-out benchmarks: processor replicas on 8 shards, and ingest on a Redis Cluster.

Drain with R replicas: the processors start on empty streams and are paused (SIGSTOP);
the 8 shards are filled, every processor is resumed at once, and the clock runs until
every shard's group has read and acknowledged everything. Each figure is a ratio to one
replica measured in the same run; on a 2-core machine the processors and PostgreSQL share
the cores, which is where the ratios stop growing.

Ingest on a Redis Cluster (3 primaries, 3 replicas, loopback) against one Redis: the
async single-event endpoint at saturation, one worker, 8 shards both ways, alternated
A/B and compared pair by pair (the median ratio is reported).
"""

from __future__ import annotations

import signal
import statistics
import time
from typing import Any

import redis

from bench import workload
from bench.load import wrk
from bench.rule_engine import TWENTY_RULES
from bench.stack import Stack
from bricqs.schemas import ENVELOPE_FIELD, decode_envelope
from bricqs.stream import shard_for, stream_key
from bricqs_devstack.cluster import start_redis_cluster

SHARDS = 8
REPLICAS = (1, 2, 4)
SINGLE = "/api/v1/ingest/events"
# Events per drain, seconds per ingest run, A/B pairs.
FULL = {"events": 20_000, "seconds": 5, "pairs": 3}
SMOKE = {"events": 400, "seconds": 1, "pairs": 1}


def run(stack: Stack, *, smoke: bool) -> dict[str, Any]:
    """The scaling figures: drain per replica count, and ingest cluster / one Redis."""
    plan = SMOKE if smoke else FULL
    events, seconds, pairs = plan["events"], plan["seconds"], plan["pairs"]
    drains = {r: drain(stack, replicas=r, events=events) for r in REPLICAS}
    base = drains[1]["events_per_second"]
    return {
        "shards": SHARDS,
        "processor_drain_20_rules": {
            str(r): d | {"ratio_to_1": round(d["events_per_second"] / base, 2) if base else 0.0}
            for r, d in drains.items()
        },
        "ingest_cluster": ingest_cluster_vs_single(stack, seconds=seconds, pairs=pairs),
    }


def _reset(client: redis.Redis) -> None:
    client.delete(*(stream_key(s) for s in range(SHARDS)))


def _fill(client: redis.Redis, project_id: str, events: int) -> None:
    pipe = client.pipeline(transaction=False)
    for payload in workload.envelopes(project_id, events):
        envelope = decode_envelope(payload)
        shard = shard_for(envelope.project_id, envelope.participant_id, SHARDS)
        pipe.xadd(stream_key(shard), {ENVELOPE_FIELD: payload})
        if len(pipe) >= 5_000:
            pipe.execute()
    pipe.execute()


def _drained(client: redis.Redis) -> bool:
    for shard in range(SHARDS):
        groups = client.xinfo_groups(stream_key(shard))
        if not groups or groups[0]["lag"] != 0 or groups[0]["pending"] != 0:
            return False
    return True


def drain(stack: Stack, *, replicas: int, events: int) -> dict[str, Any]:
    """Events per second `replicas` processors store from 8 filled shards (20 rules)."""
    project = stack.project(f"scaling-{replicas}", TWENTY_RULES)
    client = redis.Redis.from_url(stack.redis_url)
    children = []
    try:
        _reset(client)
        for _ in range(replicas):
            _, child = stack.processor(STREAM_SHARDS=str(SHARDS))
            children.append(child)
        for child in children:
            child.send_signal(signal.SIGSTOP)
        _fill(client, project.project_id, events)
        started = time.perf_counter()
        for child in children:
            child.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 300
        while not _drained(client):
            if time.monotonic() > deadline or any(c.poll() is not None for c in children):
                raise RuntimeError(f"{replicas} processors did not drain {events} events")
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        stored = stack.stored_events(project.project_id)
        if stored != events:
            raise RuntimeError(f"{stored} of {events} events stored after every ack")
    finally:
        for child in children:
            child.send_signal(signal.SIGCONT)
            stack.stop(child)
        _reset(client)
        client.close()
    return {
        "replicas": replicas,
        "events": events,
        "seconds": round(elapsed, 3),
        "events_per_second": round(events / elapsed, 1),
    }


def ingest_cluster_vs_single(stack: Stack, *, seconds: float, pairs: int) -> dict[str, Any]:
    """Saturation rate of the async endpoint on a Redis Cluster over one Redis."""
    project = stack.project("scaling-ingest")
    bodies = workload.single_bodies(2_000)
    cluster = start_redis_cluster(stack.root / "cluster")
    try:
        single_port, single = stack.granian(
            "bricqs_ingest.app:create_app", STREAM_SHARDS=str(SHARDS)
        )
        cluster_port, clustered = stack.granian(
            "bricqs_ingest.app:create_app",
            STREAM_SHARDS=str(SHARDS),
            REDIS_URL=cluster.url,
            REDIS_CLUSTER="true",
        )
        rates: dict[str, list[float]] = {"single": [], "cluster": []}
        for _ in range(pairs):
            for name, port in (("single", single_port), ("cluster", cluster_port)):
                result = wrk(port, SINGLE, project.key, bodies, connections=50, seconds=seconds)
                if result.errors:
                    raise RuntimeError(f"ingest on {name} Redis: {result.errors} errors")
                rates[name].append(result.rate)
        stack.stop(single)
        stack.stop(clustered)
    finally:
        cluster.stop()
    ratios = [c / s for s, c in zip(rates["single"], rates["cluster"], strict=True) if s]
    return {
        "single_requests_per_second": [round(r, 1) for r in rates["single"]],
        "cluster_requests_per_second": [round(r, 1) for r in rates["cluster"]],
        "cluster_vs_single": round(statistics.median(ratios), 3) if ratios else 0.0,
    }


def table(results: dict[str, Any]) -> str:
    """The scaling rows of the bench's table."""
    lines = [f"scaling ({results['shards']} shards, 20 rules)"]
    for replicas, d in results["processor_drain_20_rules"].items():
        lines.append(
            f"  processor drain, {replicas} replica(s): {d['events_per_second']:>10,.0f} ev/s"
            f"  x{d['ratio_to_1']:.2f}"
        )
    ingest = results["ingest_cluster"]
    lines.append(
        f"  ingest async single, Redis Cluster / one Redis: {ingest['cluster_vs_single']:.3f}"
        " (median of pairs)"
    )
    return "\n".join(lines)
