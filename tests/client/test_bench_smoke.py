"""`python -m bench.client` runs end to end in a second per step (the figures are not
judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bricqs_devstack.servers import Server

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_client_bench_measures_track_cost_and_the_ratio_to_wrk(
    redis_server: Server, postgres_server: Server
) -> None:
    run = subprocess.run(
        [
            *(sys.executable, "-m", "bench.client", "--seconds", "1", "--rounds", "1"),
            *("--events", "2000", "--track-events", "2000"),
            # Database 1: the bench empties its stream; the other tests use database 0.
            *("--redis-url", redis_server.url.rsplit("/", 1)[0] + "/1"),
            *("--database-url", postgres_server.url),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(run.stdout)
    assert results["track_queue_only"]["cpu_us"] > 0
    [round_] = results["rounds"]
    assert round_["client_1_sender"]["events_per_second"] > 0
    assert results["median_ratio_client_to_wrk_keyed"] > 0
