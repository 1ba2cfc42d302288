"""Two processor replicas and the sync endpoint hit one participant at the same time:
every total equals a sequential run of the same events."""

from __future__ import annotations

import asyncio
import threading

import httpx
import msgspec
import psycopg
import pytest
import redis

from bricqs.schemas import Envelope
from bricqs.storage import tenants
from bricqs.storage.tenants import SCOPES
from bricqs_devstack.servers import Server
from tests.ingest.helpers import SYNC, granian_ingest
from tests.mechanics.test_exactly_once import make_envelopes, run, setup_tenant, snapshot
from tests.processes import FAST, ProcessorFactory, wait_until
from tests.processor.conftest import processors, xadd_envelopes  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


def stored_events(url: str, project_id: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE project_id = %s", (project_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_processors_and_sync_on_one_participant_equal_a_sequential_run(
    redis_server: Server,
    postgres_server: Server,
    redis_client: redis.Redis,
    processors: ProcessorFactory,  # noqa: F811
) -> None:
    url = postgres_server.url
    concurrent, sequential = setup_tenant(url), setup_tenant(url)
    events = [
        msgspec.structs.replace(e, participant_id="hot", project_id=concurrent.project_id)
        for e in make_envelopes(concurrent, 240, seed=11)
    ]
    queued, synced = events[0::2], events[1::2]

    # The sync endpoint needs a key of the concurrent tenant's project.
    async def mint() -> str:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            _, plaintext = await tenants.create_key(
                conn, concurrent.project_id, "live", scopes=SCOPES
            )
        return plaintext

    key = asyncio.run(mint())
    for _ in range(2):
        processors.start(**FAST)
    errors: list[BaseException] = []

    def feed_stream() -> None:
        try:
            for i in range(0, len(queued), 10):
                xadd_envelopes(redis_client, queued[i : i + 10])
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def call_sync(part: list[Envelope], base: str) -> None:
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                for e in part:
                    answer = client.post(
                        SYNC,
                        headers={"X-API-Key": key},
                        json={
                            "event_name": e.event_name,
                            "participant_id": e.participant_id,
                            "properties": e.properties,
                            "timestamp": e.occurred_at.isoformat(),
                        },
                    )
                    assert answer.status_code == 200, answer.text
        except BaseException as exc:
            errors.append(exc)

    with granian_ingest(redis_server.url, url) as base:
        threads = [
            threading.Thread(target=feed_stream),
            threading.Thread(target=call_sync, args=(synced[0::2], base)),
            threading.Thread(target=call_sync, args=(synced[1::2], base)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors, errors
    wait_until(
        lambda: stored_events(url, concurrent.project_id) == len(events),
        60,
        "every event stored",
        processors.logs,
    )

    run(
        url,
        [
            [e]
            for e in sorted(
                (msgspec.structs.replace(e, project_id=sequential.project_id) for e in events),
                key=lambda e: e.occurred_at,
            )
        ],
    )
    a, b = snapshot(url, sequential), snapshot(url, concurrent)
    for part in ("balances", "badges", "challenges", "streaks", "progress"):
        assert a[part] == b[part], part
    assert a["balances"] and a["badges"]  # the rules did fire
