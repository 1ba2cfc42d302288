"""The dispatcher as a process: metrics and health on METRICS_PORT, exit 0 on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bricqs_devstack.servers import Server, free_port
from tests.deploy.helpers import alert_rules
from tests.processes import wait_until
from tests.webhooks.test_crash import start_dispatcher


@pytest.mark.slow
def test_dispatcher_serves_metrics_and_health_and_stops_cleanly(
    postgres_server: Server, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "dispatcher.log"
    process = start_dispatcher(postgres_server.url, log, metrics_port=port)
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> httpx.Response | None:
            try:
                response = httpx.get(f"{url}/health/ready", timeout=2)
            except httpx.TransportError:
                return None
            return response if response.status_code == 200 else None

        answer = wait_until(ready, 20, "the dispatcher to be ready", log.read_text)
        assert answer.json() == {"status": "ok", "checks": {"postgres": "ok"}}
        assert httpx.get(f"{url}/health/live", timeout=2).status_code == 200
        metrics = httpx.get(f"{url}/metrics", timeout=2).text
        assert "bricqs_dispatcher_in_flight" in metrics
        assert "bricqs_dispatcher_attempt_seconds_bucket" in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0, log.read_text()


def test_alerts_watch_failures_backlog_age_and_disabled_endpoints() -> None:
    rules = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    text = "\n".join(rules.values())
    for needed in (
        'up{job="bricqs-dispatcher"}',
        'bricqs_dispatcher_attempts_total{result=~"retry|failed"}',
        'bricqs_dispatcher_attempts_total{result="failed"}',
        "bricqs_dispatcher_oldest_due_seconds",
        "bricqs_dispatcher_disabled_endpoints",
        "bricqs_dispatcher_endpoints_disabled_total",
        "bricqs_dispatcher_round_errors_total",
    ):
        assert needed in text, needed


@pytest.mark.slow
def test_the_delivery_bench_runs() -> None:
    # The numbers are not judged here: only that the bench still drives the dispatcher.
    run = subprocess.run(
        [sys.executable, "-m", "bench.webhooks", "--only", "deliveries", "--messages", "300"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)["deliveries"]
    assert result["received"] >= result["messages"] == 300
