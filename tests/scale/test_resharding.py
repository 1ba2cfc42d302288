"""Changing STREAM_SHARDS from 2 to 4 under load, by the procedure of docs/resharding.md:
processors read both mappings' streams, ingest on the new mapping holds queued intake
until the old streams are drained. Nothing is lost or stored twice, and a participant's
events queued before the change are stored before those queued after it.

`CI=true` runs a short load; `SCALE_SECONDS` sets another length.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
import redis

from bricqs.stream import stream_key
from bricqs_devstack.servers import Server
from tests.conftest import make_tenant
from tests.faults.harness import read_rows
from tests.faults.traffic import STOP_BOUND, Client, Traffic
from tests.ingest.helpers import granian_ingest
from tests.processes import ProcessorFactory, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

LOAD_SECONDS = float(os.environ.get("SCALE_SECONDS") or (6 if os.environ.get("CI") else 20))
CLIENTS = 3


def load(base: str, key: str, traffic: Traffic, seconds: float, first: int) -> None:
    """Clients numbered from `first` send for `seconds`, then finish what they hold."""
    clients = [Client(first + n, base, key, traffic) for n in range(CLIENTS)]
    for client in clients:
        client.start()
    time.sleep(seconds)
    for client in clients:
        client.halt.set()
    for client in clients:
        client.join(STOP_BOUND)
        assert client.failure is None, client.failure


def stored_at(database_url: str, project_id: str) -> dict[str, tuple[str, datetime]]:
    """seq -> (participant, when its transaction stored it)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT properties->>'seq', participant_id, stored_at FROM events"
            " WHERE project_id = %s",
            (project_id,),
        ).fetchall()
    return {seq: (participant, at) for seq, participant, at in rows}


def test_resharding_from_2_to_4_under_load_loses_duplicates_and_reorders_nothing(
    redis_server: Server, postgres_server: Server, redis_client: redis.Redis, tmp_path: Path
) -> None:
    tenant = make_tenant(postgres_server.url, "resharding")
    processors = ProcessorFactory(redis_server.url, postgres_server.url, tmp_path)
    before, after = Traffic(), Traffic()
    try:
        # 1. Processors read the streams of both mappings.
        processor = processors.start(STREAM_SHARDS="4", STREAM_SHARDS_PREVIOUS="2")
        with granian_ingest(redis_server.url, postgres_server.url, STREAM_SHARDS="2") as base:
            load(base, tenant.live_key, before, LOAD_SECONDS / 2, 0)
            # The processors fall behind, so the old streams hold events at the change.
            processor.process.send_signal(signal.SIGSTOP)
            load(base, tenant.live_key, before, 1.0, 10)
        # 2. Ingest moves to the new mapping, holding queued intake while the old
        # streams still hold events.
        with granian_ingest(
            redis_server.url,
            postgres_server.url,
            STREAM_SHARDS="4",
            STREAM_SHARDS_PREVIOUS="2",
            BACKLOG_CHECK_MS="100",
        ) as base:
            # The processors catch up a second into the new mapping's load.
            threading.Timer(1.0, processor.process.send_signal, [signal.SIGCONT]).start()
            load(base, tenant.live_key, after, LOAD_SECONDS / 2 + 1.0, 20)
        accepted = before.accepted() + after.accepted()

        def all_stored() -> bool:
            rows = read_rows(postgres_server.url, tenant.project_id)
            return all(rows.get(s.seq) for s in accepted)

        wait_until(all_stored, 60, "every accepted event to be stored", processors.logs)
        rows = read_rows(postgres_server.url, tenant.project_id)
        when = stored_at(postgres_server.url, tenant.project_id)
    finally:
        processor.process.send_signal(signal.SIGCONT)
        processors.stop_all()

    everything = before.sent + after.sent
    assert [s.seq for s in everything if len(rows.get(s.seq, [])) > 1] == []
    assert all(rows[s.seq][0][0] == s.event_id for s in accepted)
    assert before.errors == after.errors == []
    # The new mapping took effect, and held intake while the old streams drained.
    assert sum(redis_client.xinfo_stream(stream_key(s))["entries-added"] for s in (2, 3)) > 0
    assert after.statuses["503 ingest_backpressure"] > 0
    # A participant's queued events from before the change were stored before any of
    # theirs queued after it (sync events bypass the streams).
    last_before: dict[str, datetime] = {}
    for sent in before.accepted():
        if sent.endpoint != "sync":
            participant, at = when[sent.seq]
            last_before[participant] = max(at, last_before.get(participant, at))
    overtaken = [
        s.seq
        for s in after.accepted()
        if s.endpoint != "sync"
        and when[s.seq][0] in last_before
        and when[s.seq][1] <= last_before[when[s.seq][0]]
    ]
    assert overtaken == []
