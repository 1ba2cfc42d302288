"""A pod's SIGTERM: the services, started as their images start them, exit 0 within the
terminationGracePeriodSeconds their manifests give them; the processor acknowledges the
batch in hand and leaves the rest of the stream to the other consumers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from bricqs.ids import new_event_id
from bricqs.schemas import ENVELOPE_FIELD, Envelope, encode_envelope
from bricqs.stream import CONSUMER_GROUP, stream_key
from bricqs_devstack.servers import Server, free_port
from tests.conftest import Tenant
from tests.deploy.helpers import (
    HTTP_SERVICES,
    env_for,
    image_argv,
    named,
    pod_spec,
    running,
    wait_for,
)

pytestmark = pytest.mark.slow

# Enough that the stream is far from drained when SIGTERM lands: the processor stores
# tens of thousands of rule-less events a second, in small batches here.
EVENTS = 20_000


def grace_seconds(service: str) -> int:
    """terminationGracePeriodSeconds of the service's prod Deployment, less its preStop."""
    spec = pod_spec(named("prod", "Deployment", f"bricqs-{service}"))
    pre_stop = spec["containers"][0].get("lifecycle", {}).get("preStop", {})
    # The kubelet runs preStop first; SIGTERM gets what is left of the grace period.
    return int(spec["terminationGracePeriodSeconds"]) - int(
        pre_stop.get("sleep", {}).get("seconds", 0)
    )


@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_http_service_exits_zero_on_sigterm_within_its_grace_period(
    redis_server: Server,
    postgres_server: Server,
    tenant: Tenant,
    redis_client: Any,
    tmp_path: Path,
    service: str,
) -> None:
    port = free_port()
    with running(
        image_argv(service, host="127.0.0.1", port=str(port)),
        env_for(service, redis_server.url, postgres_server.url),
        f"http://127.0.0.1:{port}",
        tmp_path / f"{service}.log",
    ) as running_service:
        headers = {"X-API-Key": tenant.live_key}
        for i in range(20):
            if service == "ingest":
                response = httpx.post(
                    f"{running_service.url}/api/v1/ingest/events",
                    headers=headers,
                    json={"event_name": "shutdown_check", "participant_id": f"p{i}"},
                    timeout=10,
                )
                assert response.status_code == 202
            else:
                response = httpx.get(
                    f"{running_service.url}/api/v1/gamify/participants/p{i}/state",
                    headers=headers,
                    timeout=10,
                )
                assert response.status_code == 200
        code, seconds = running_service.stop(timeout=grace_seconds(service))
    assert code == 0, running_service.log()
    assert seconds < grace_seconds(service)


def test_processor_exits_zero_on_sigterm_with_the_batch_in_hand_acknowledged(
    redis_server: Server,
    postgres_server: Server,
    tenant: Tenant,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    stream = stream_key(0)
    now = datetime.now(UTC)
    pipe = redis_client.pipeline(transaction=False)
    for i in range(EVENTS):
        envelope = Envelope(
            event_id=new_event_id(),
            project_id=tenant.project_id,
            environment="live",
            event_name="shutdown_check",
            participant_id=f"p{i % 97}",
            properties={"i": i},
            occurred_at=now,
            received_at=now,
        )
        pipe.xadd(stream, {ENVELOPE_FIELD: encode_envelope(envelope)})
    pipe.execute()

    port = free_port()
    consumer = "shutdown-test"
    with running(
        image_argv("processor"),
        env_for(
            "processor",
            redis_server.url,
            postgres_server.url,
            METRICS_HOST="127.0.0.1",
            METRICS_PORT=str(port),
            CONSUMER_NAME=consumer,
            BATCH_SIZE="200",
        ),
        f"http://127.0.0.1:{port}",
        tmp_path / "processor.log",
    ) as processor:

        def batch_in_hand() -> bool:
            try:
                return int(redis_client.xpending(stream, CONSUMER_GROUP)["pending"]) > 0
            except redis.ResponseError:  # the group does not exist yet
                return False

        # SIGTERM while a batch is read and not yet acknowledged.
        wait_for(batch_in_hand, 30, "the processor to take a batch")
        code, seconds = processor.stop(timeout=grace_seconds("processor"))
    assert code == 0, processor.log()
    assert seconds < grace_seconds("processor")

    # Nothing left pending on the stopped consumer: the batch in hand was committed and
    # acknowledged; intake stopped, so the rest waits unread for the other consumers.
    (group,) = [
        g for g in redis_client.xinfo_groups(stream) if g["name"] == CONSUMER_GROUP.encode()
    ]
    assert group["pending"] == 0, processor.log()
    unread = int(group["lag"])
    assert 0 < unread < EVENTS, "SIGTERM should stop intake before the stream is drained"
    with psycopg.connect(postgres_server.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE project_id = %s", (tenant.project_id,)
        ).fetchone()
    assert row is not None
    assert row[0] == EVENTS - unread  # every entry read was stored; none is lost
