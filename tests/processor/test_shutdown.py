"""SIGTERM stops intake, commits and acknowledges the batch in hand, and exits 0; a bad
setting stops the processor at start-up with a message naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from bricqs.stream import CONSUMER_GROUP, stream_key
from bricqs_devstack.servers import Server
from tests.conftest import Tenant, service_env
from tests.processor.conftest import (
    ProcessorFactory,
    envelope,
    event_count,
    pending,
    stored,
    wait_until,
    xadd_envelopes,
)

pytestmark = pytest.mark.slow

STREAM = stream_key(0)


def test_sigterm_mid_stream_commits_and_acknowledges_the_batch_in_hand_then_exits_0(
    processors: ProcessorFactory,
    redis_client: redis.Redis,
    postgres_server: Server,
    tenant: Tenant,
) -> None:
    total = 20_000
    for start in range(0, total, 2_000):
        xadd_envelopes(redis_client, [envelope(tenant, i) for i in range(start, start + 2_000)])
    processor = processors.start(BATCH_SIZE="200")
    wait_until(
        lambda: event_count(postgres_server.url, tenant.project_id) > 0, 20, "a first commit"
    )
    assert processor.terminate() == 0, processor.log()

    group = redis_client.xinfo_groups(STREAM)[0]
    delivered = group["entries-read"]
    assert 0 < delivered < total, "the processor should have stopped mid-stream"
    # Everything delivered to it was committed and acknowledged; nothing else was read.
    assert pending(redis_client) == 0
    s = stored(postgres_server.url, tenant.project_id)
    assert s.events == s.facts == s.participant_events == s.catalog_events == delivered
    assert group["name"].decode() == CONSUMER_GROUP


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BATCH_SIZE", "lots"), ("CLAIM_MIN_IDLE_MS", "1000"), ("LOG_LEVEL", "LOUD")],
)
def test_a_bad_setting_exits_2_naming_the_variable(
    redis_server: Server, postgres_server: Server, variable: str, value: str
) -> None:
    env = service_env(redis_server.url, postgres_server.url, METRICS_PORT="0")
    env[variable] = value  # after service_env, which sets LOG_LEVEL itself
    result = subprocess.run(
        [sys.executable, "-m", "bricqs_processor.main"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "configuration error" in result.stderr
    assert variable in result.stderr
