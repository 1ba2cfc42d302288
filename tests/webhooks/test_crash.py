"""A dispatcher SIGKILLed again and again mid-delivery loses nothing: every outcome
arrives, and a message delivered twice carries the same webhook-id and body."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bricqs_devstack.servers import Server, free_port
from tests.conftest import Story, service_env
from tests.processes import wait_until
from tests.webhooks.conftest import SECRETS_KEYS, Receiver, answer, subscribe
from tests.webhooks.test_outbox import define_points_and_badge


def start_dispatcher(
    database_url: str, log: Path, metrics_port: int | None = None, **settings: str
) -> subprocess.Popen[bytes]:
    env = service_env(
        "redis://127.0.0.1:1/0",
        database_url,
        WEBHOOKS_ALLOW_PRIVATE="true",
        WEBHOOK_SECRETS_KEYS=SECRETS_KEYS,
        ATTEMPT_TIMEOUT_SECONDS="0.5",
        LEASE_SECONDS="1",
        POLL_INTERVAL_MS="20",
        MAX_IN_FLIGHT_PER_ENDPOINT="8",
        METRICS_PORT=str(metrics_port or free_port()),
        **settings,
    )
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bricqs_dispatcher.main"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
def test_sigkilled_dispatchers_lose_nothing(
    hooks: Story,
    receiver: Receiver,
    postgres_server: Server,
    db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    # Each answer takes a little while, so kills land with attempts in flight.
    endpoint = subscribe(hooks, receiver.on("/crash", answer(200, delay=0.05)))
    define_points_and_badge(hooks)
    for n in range(40):
        hooks.send("purchase", f"k{n}")
    expected = {
        row[0]
        for row in db.execute(
            "SELECT fact_id FROM webhook_messages WHERE endpoint_id = %s",
            (endpoint["endpoint_id"],),
        ).fetchall()
    }
    assert len(expected) == 80  # points.awarded and badge.awarded for each participant
    log = tmp_path / "dispatcher.log"

    def delivered() -> int:
        row = db.execute(
            "SELECT count(*) FROM webhook_messages WHERE endpoint_id = %s AND status = 'delivered'",
            (endpoint["endpoint_id"],),
        ).fetchone()
        assert row is not None
        return int(row[0])

    for round_ in range(5):
        before = len(receiver.at("/crash"))
        process = start_dispatcher(postgres_server.url, log)
        wait_until(
            lambda b=before: len(receiver.at("/crash")) >= b + 5,
            30,
            f"deliveries in round {round_}",
            log.read_text,
        )
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert delivered() < len(expected)  # the kills interrupted the work
    process = start_dispatcher(postgres_server.url, log)
    try:
        wait_until(lambda: delivered() == len(expected), 60, "everything delivered", log.read_text)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0

    bodies: dict[str, set[bytes]] = defaultdict(set)
    for request in receiver.at("/crash"):
        bodies[request.headers["webhook-id"]].add(request.body)
    assert set(bodies) == expected
    assert all(len(b) == 1 for b in bodies.values())  # a duplicate is the same message
