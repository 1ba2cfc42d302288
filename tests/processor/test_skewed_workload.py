"""A skewed workload (Zipf participants: 1% of them send about half the events) through
two processor replicas gives the totals of a sequential run of the same events.

The rules are read-then-write ones, whose exactness rests on serialising transactions per
participant: a daily cap (read what was earned, then write) and a streak (read the
periods, then save the run). Two things serialise them today: the participant advisory
locks, and the upsert of the participant's row in store_events, held until commit (with
neither, the hot participant earns past its cap here)."""

from __future__ import annotations

import asyncio
import random

import msgspec
import psycopg
import pytest
import redis

from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import KINDS
from bricqs.schemas import Envelope
from bricqs.storage.definitions import create_definition
from bricqs.storage.tenants import Tenant
from bricqs_devstack.servers import Server
from tests.conftest import make_tenant
from tests.mechanics.test_exactly_once import DEFINITIONS, make_envelopes, run
from tests.processor.conftest import FAST, ProcessorFactory, wait_until, xadd_envelopes
from tests.readback import snapshot

pytestmark = pytest.mark.slow

PARTICIPANTS = 200
LOCKED_RULES = [(s, d) for s, d in DEFINITIONS if d["code"] in ("spend", "daily")]
EVENTS = 1000


def zipf_participants(n: int, rng: random.Random) -> list[str]:
    """`n` participant ids drawn with weight 1/rank^1.4 from PARTICIPANTS: the top 1%
    sends about half the events."""
    weights = [1 / rank**1.4 for rank in range(1, PARTICIPANTS + 1)]
    return [f"p{i}" for i in rng.choices(range(PARTICIPANTS), weights=weights, k=n)]


def skewed(tenant: Tenant) -> list[Envelope]:
    rng = random.Random(23)
    participants = zipf_participants(EVENTS, rng)
    return [
        msgspec.structs.replace(e, participant_id=pid)
        for e, pid in zip(make_envelopes(tenant, EVENTS, seed=23), participants, strict=True)
    ]


def setup_tenant(url: str) -> Tenant:
    tenant = Tenant(make_tenant(url).project_id, "live")

    async def define() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for segment, raw in LOCKED_RULES:
                kind, schema = KINDS[segment]
                definition = parse_definition(schema, raw)
                assert not isinstance(definition, list), definition
                body = msgspec.json.encode(definition).decode()
                await create_definition(conn, tenant, kind, raw["code"], "active", body)

    asyncio.run(define())
    return tenant


def stored_events(url: str, project_id: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE project_id = %s", (project_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_two_replicas_on_a_zipf_workload_equal_a_sequential_run(
    postgres_server: Server,
    redis_client: redis.Redis,
    processors: ProcessorFactory,
) -> None:
    url = postgres_server.url
    concurrent, sequential = setup_tenant(url), setup_tenant(url)
    events = skewed(concurrent)
    hot = sorted(
        {e.participant_id for e in events},
        key=lambda p: -sum(e.participant_id == p for e in events),
    )[: PARTICIPANTS // 100]
    assert sum(e.participant_id in hot for e in events) >= 0.4 * EVENTS  # skewed indeed

    for _ in range(2):
        processors.start(**FAST, BATCH_SIZE="20")
    # Both replicas are waiting when the events come, and read them in small batches:
    # most batches of each hold the hot participants, so they contend all along.
    xadd_envelopes(redis_client, events)
    wait_until(
        lambda: stored_events(url, concurrent.project_id) == len(events),
        90,
        "every event stored",
        processors.logs,
    )

    run(
        url,
        [
            [msgspec.structs.replace(e, project_id=sequential.project_id)]
            for e in sorted(events, key=lambda e: e.occurred_at)
        ],
    )
    a, b = snapshot(url, sequential), snapshot(url, concurrent)
    assert len(LOCKED_RULES) == 2
    for part in ("balances", "streaks"):
        assert a[part] == b[part], part
    assert a["balances"] and a["streaks"]  # the rules did fire
