"""The whole pipeline through a real PgBouncer in transaction mode (issue 12, part 4).

Ingest (Granian), two processors, the api (Granian) and the webhook dispatcher reach
PostgreSQL only through PgBouncer (`pool_mode = transaction`, fewer server connections
than clients, so transactions of different services share server sessions), with
`DATABASE_TRANSACTION_POOLING=true`; the statement timeout comes from the role. Clients
send single, batch and sync events over HTTP (the fault suite's clients, without the
faults); then the checks of the fault suite: every event answered 2xx is stored exactly
once with its fact, totals equal a clean replay, and the api, the dispatcher and
`bricqs-admin` answer through PgBouncer what PostgreSQL holds.

The run happens once per module; CI runs a short load, BRICQS_SCALE_LOAD_SECONDS sets a
longer one.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from bricqs.admin import main as admin_main
from bricqs.storage.locks import lock_participants
from bricqs.storage.tenants import Tenant as MechanicsTenant
from bricqs.stream import dead_letter_key
from bricqs_devstack.pg_extras import start_pgbouncer
from bricqs_devstack.servers import Server
from tests.conftest import Tenant, make_tenant, private_servers
from tests.faults.harness import Drain, read_rows, replay
from tests.faults.test_faults import define_mechanics
from tests.faults.traffic import Client, Sent, Traffic
from tests.ingest.helpers import SYNC, granian_app, granian_ingest
from tests.processes import ProcessorFactory, wait_until
from tests.readback import Stored, snapshot, stored
from tests.webhooks.conftest import Receiver
from tests.webhooks.test_crash import start_dispatcher

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LOAD_SECONDS = float(os.environ.get("BRICQS_SCALE_LOAD_SECONDS", "8"))
CLIENTS = 3
PROCESSORS = 2
# Fewer server connections than the services' pools hold: transactions of ingest, the
# processors, the api and the dispatcher take turns on the same server sessions.
SERVER_CONNECTIONS = 4
# The role's statement_timeout: what bounds statements behind PgBouncer.
ROLE_STATEMENT_TIMEOUT_MS = 2000
POOLED = {"DATABASE_TRANSACTION_POOLING": "true"}


@dataclass
class Run:
    """What the clients were told, and what PostgreSQL holds after the stream drained."""

    direct: Server
    bouncer: Server
    api: str
    ingest: str
    tenant: Tenant
    traffic: Traffic
    rows: dict[str, list[tuple[str, int]]]
    dead_letters: int
    replay: MechanicsTenant
    receiver: Receiver
    endpoint_id: str

    def accepted(self) -> list[Sent]:
        return [s for s in self.traffic.sent if s.outcome == "accepted"]


@pytest.fixture(scope="module")
def servers(data_root: Path) -> Iterator[dict[str, Server]]:
    with private_servers(data_root / "pgbouncer") as owned:
        with psycopg.connect(owned["postgres"].url, autocommit=True) as conn:
            conn.execute(
                "ALTER ROLE bricqs IN DATABASE bricqs"
                f" SET statement_timeout = {ROLE_STATEMENT_TIMEOUT_MS}"
            )
        bouncer = start_pgbouncer(
            data_root / "pgbouncer" / "bouncer", owned["postgres"], pool_size=SERVER_CONNECTIONS
        )
        try:
            yield {**owned, "pgbouncer": bouncer}
        finally:
            bouncer.stop()


@pytest.fixture(scope="module")
def run(servers: dict[str, Server], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    direct, bouncer, redis_url = servers["postgres"], servers["pgbouncer"], servers["redis"].url
    logs = Path(tmp_path_factory.mktemp("pgbouncer-logs"))
    tenant = make_tenant(direct.url, "through pgbouncer")
    define_mechanics(direct.url, MechanicsTenant(tenant.project_id, "live"))
    processors = ProcessorFactory(redis_url, bouncer.url, logs)
    receiver = Receiver()
    receiver.start()
    traffic = Traffic()
    clients = [Client(n, "", tenant.live_key, traffic) for n in range(CLIENTS)]
    dispatcher = start_dispatcher(bouncer.url, logs / "dispatcher.log", **POOLED)
    try:
        for _ in range(PROCESSORS):
            processors.start(**POOLED)
        with (
            granian_app(
                "bricqs_api.app:create_app",
                redis_url,
                bouncer.url,
                WEBHOOKS_ALLOW_PRIVATE="true",
                LOG_LEVEL="ERROR",
                **POOLED,
            ) as api,
            granian_ingest(redis_url, bouncer.url, LOG_LEVEL="ERROR", **POOLED) as ingest,
        ):
            subscribed = httpx.post(
                f"{api}/api/v1/gamify/admin/webhooks",
                headers={"X-API-Key": tenant.live_key},
                json={"url": receiver.on("/hooks", lambda n: (200, {}, 0.0)), "event_types": ["*"]},
            )
            assert subscribed.status_code == 201, subscribed.text
            for client in clients:
                client.base = ingest
                client.start()
            time.sleep(LOAD_SECONDS)
            for client in clients:
                client.halt.set()
            for client in clients:
                client.join(60)
                assert client.failure is None, client.failure
            with redis.Redis.from_url(redis_url, socket_timeout=5) as queue:
                wait_until(Drain(queue), 60, "the stream to drain", processors.logs)
                dead_letters = int(queue.xlen(dead_letter_key(0)))
            replayed = make_tenant(direct.url, "pgbouncer replay")
            replay_tenant = MechanicsTenant(replayed.project_id, "live")
            define_mechanics(direct.url, replay_tenant)
            result = Run(
                direct=direct,
                bouncer=bouncer,
                api=api,
                ingest=ingest,
                tenant=tenant,
                traffic=traffic,
                rows=read_rows(direct.url, tenant.project_id),
                dead_letters=dead_letters,
                replay=replay_tenant,
                receiver=receiver,
                endpoint_id=subscribed.json()["endpoint_id"],
            )
            replay(direct.url, replay_tenant, result.accepted())
            yield result
    finally:
        for client in clients:
            client.halt.set()
        processors.stop_all()
        dispatcher.kill()
        dispatcher.wait(10)
        receiver.stop()


def test_every_event_was_answered_2xx_through_pgbouncer(run: Run) -> None:
    assert run.traffic.errors == [], run.traffic.errors[:10]
    statuses = Counter(label.split()[0] for label in run.traffic.statuses.elements())
    assert set(statuses) <= {"200", "201", "202", "207"}, run.traffic.statuses
    endpoints = Counter(s.endpoint for s in run.accepted())
    assert min(endpoints[e] for e in ("single", "batch", "sync")) > 0, endpoints
    assert len(run.accepted()) == len(run.traffic.sent) > 100


def test_every_accepted_event_is_stored_once_with_its_fact(run: Run) -> None:
    lost = [s.seq for s in run.accepted() if not run.rows.get(s.seq)]
    assert lost == []
    for sent in run.accepted():
        ((event_id, facts),) = run.rows[sent.seq]  # exactly one stored event
        assert event_id == sent.event_id, sent
        assert facts == 1, sent
    assert set(run.rows) <= {s.seq for s in run.traffic.sent}
    assert run.dead_letters == 0
    n = len(run.accepted())
    assert stored(run.direct.url, run.tenant.project_id) == Stored(n, n, n, n, n)


def test_mechanics_equal_a_clean_replay(run: Run) -> None:
    pooled = snapshot(run.direct.url, MechanicsTenant(run.tenant.project_id, "live"))
    clean = snapshot(run.direct.url, run.replay)
    assert pooled["badges"] and pooled["challenges"] and pooled["streaks"]  # rules fired
    for part in ("balances", "ledger", "badges", "challenges", "streaks", "progress", "facts"):
        assert pooled[part] == clean[part], part


def test_the_api_reads_what_postgres_holds_through_pgbouncer(run: Run) -> None:
    balances = snapshot(run.direct.url, MechanicsTenant(run.tenant.project_id, "live"))["balances"]
    assert len(balances) > 5
    headers = {"X-API-Key": run.tenant.live_key}
    with httpx.Client(base_url=run.api, headers=headers, timeout=10) as http:
        # More reads per participant than psycopg's prepare threshold (5) on each
        # connection of the api's pool: a prepared statement would meet another session.
        for _ in range(3):
            for participant, balance, earned, spent in balances:
                state = http.get(f"/api/v1/gamify/participants/{participant}/state")
                assert state.status_code == 200, state.text
                points = state.json()["points"]
                assert (points["balance"], points["total_earned"], points["total_spent"]) == (
                    balance,
                    earned,
                    spent,
                )


def test_the_dispatcher_delivers_every_webhook_through_pgbouncer(run: Run) -> None:
    def owed() -> dict[str, int]:
        with psycopg.connect(run.direct.url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM webhook_messages WHERE endpoint_id = %s"
                " GROUP BY status",
                (run.endpoint_id,),
            ).fetchall()
        return {status: int(count) for status, count in rows}

    wait_until(lambda: set(owed()) == {"delivered"}, 60, "every webhook to be delivered")
    delivered = owed()["delivered"]
    assert delivered > 100
    ids = Counter(r.headers["webhook-id"] for r in run.receiver.at("/hooks"))
    assert len(ids) == delivered


def test_a_statement_past_the_roles_timeout_is_cancelled_through_pgbouncer(run: Run) -> None:
    # A participant held locked by another writer: the sync endpoint's transaction waits
    # on its lock until the role's statement_timeout cancels it, and answers 503.
    async def hold() -> None:
        async with await psycopg.AsyncConnection.connect(run.direct.url) as conn:
            await lock_participants(conn, [(run.tenant.project_id, "live", "held")])
            event = {"event_name": "login", "participant_id": "held", "properties": {}}
            async with httpx.AsyncClient(base_url=run.ingest, timeout=30) as http:
                answer = await http.post(
                    SYNC, headers={"X-API-Key": run.tenant.live_key}, json=event
                )
            await conn.rollback()
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "database_overloaded"

    asyncio.run(hold())


def test_bricqs_admin_works_through_pgbouncer(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    url = ["--database-url", run.bouncer.url, "--json"]
    assert admin_main([*url, "project", "create", "admin via pgbouncer", "--with-keys"]) == 0
    created: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert admin_main([*url, "project", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert created["project"]["project_id"] in {p["project_id"] for p in listed["projects"]}
