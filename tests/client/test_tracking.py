"""track(): every event stored exactly once, whatever the server or the network does;
what cannot be stored reaches on_error. Each test runs on Client and AsyncClient."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest

from bricqs.storage.tenants import set_rate_limit
from bricqs_client import Options
from bricqs_devstack.servers import Server
from tests.client.conftest import (
    Driver,
    Failures,
    Project,
    Recorder,
    recording,
)
from tests.conftest import Tenant


def events(count: int, prefix: str = "p") -> list[dict[str, Any]]:
    return [
        {"event_name": "lesson_done", "participant_id": f"{prefix}{i % 50}", "properties": {"n": i}}
        for i in range(count)
    ]


@pytest.mark.slow
def test_ten_thousand_tracks_from_eight_workers_become_ten_thousand_facts(
    flavour: str, project: Project
) -> None:
    driver = Driver(flavour, project.tenant.live_key, project.ingest_url, Options(senders=2))
    keys = driver.track_all(events(10_000), workers=8)
    driver.close()

    assert (driver.tally.delivered, driver.tally.failed, driver.tally.dropped) == (10_000, 0, 0)
    facts = project.facts_once(10_000)
    assert len(keys) == len(set(keys)) == 10_000
    assert facts == dict.fromkeys(keys, 1)


def test_one_invalid_event_reaches_on_error_and_the_others_are_stored(
    flavour: str, project: Project
) -> None:
    failures = Failures()
    driver = Driver(
        flavour, project.tenant.live_key, project.ingest_url, Options(on_error=failures)
    )
    batch = events(3)
    batch[1] = {**batch[1], "event_name": "not a valid name!"}
    keys = driver.track_all(batch)
    driver.close()

    [failure] = failures.items
    assert (failure.event.event_name, failure.event.idempotency_key) == (
        "not a valid name!",
        keys[1],
    )
    assert (failure.status, failure.code) == (202, "validation_failed")
    assert [e.field for e in failure.errors] == ["events[1].event_name"]
    assert (driver.tally.delivered, driver.tally.failed) == (2, 1)
    facts = project.facts_once(2)
    assert facts == {keys[0]: 1, keys[2]: 1}


def test_retry_after_of_a_429_is_waited_out_before_the_next_request(
    flavour: str, ingest_url: str, postgres_server: Server, client_tenant: Tenant
) -> None:
    # The ingest reads the limit with the key, on the key's first use (after this).
    asyncio.run(_limit(postgres_server.url, client_tenant.project_id))
    # The clock only moves when the client sleeps: a request sent before Retry-After had
    # passed would carry an earlier reading. The sleep is real so the bucket refills.
    now = [0.0]

    def clock() -> float:
        return now[0]

    def sleep(seconds: float) -> None:
        now[0] += seconds
        time.sleep(seconds)

    async def async_sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(seconds)

    recorder = Recorder(clock)
    failures = Failures()
    options = Options(clock=clock, on_error=failures, flush_interval=0.05)
    driver = Driver(
        flavour,
        client_tenant.live_key,
        ingest_url,
        options,
        transport=recording(flavour, recorder),
        sleep=sleep if flavour == "sync" else async_sleep,
    )
    driver.track_all(events(300))
    driver.close()

    assert (driver.tally.delivered, failures.items) == (300, [])
    limited = [i for i, (_, status, _) in enumerate(recorder.seen) if status == 429]
    assert limited, recorder.seen
    for i in limited:
        at, _, retry_after = recorder.seen[i]
        assert retry_after is not None
        assert recorder.seen[i + 1][0] >= at + float(retry_after), recorder.seen


async def _limit(database_url: str, project_id: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        assert await set_rate_limit(conn, project_id, 100.0, 100)
