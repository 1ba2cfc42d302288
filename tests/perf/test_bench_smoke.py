"""`make bench` in smoke mode: every step runs for about a second against the test
servers, prints the table and writes its JSON. The numbers are not judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bricqs_devstack.servers import Server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def run_bench(redis_server: Server, postgres_server: Server, *args: str) -> str:
    """Run `python -m <args>` against the test servers; its standard output. Redis
    database 1: the benches empty their streams, the other tests use database 0."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            *args,
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
    return run.stdout


def test_bench_smoke_measures_every_part_and_writes_results(
    redis_server: Server, postgres_server: Server, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    printed = run_bench(redis_server, postgres_server, "bench", "--smoke", "--json", str(out))
    results = json.loads(out.read_text())
    for name in ("async_single", "batch", "sync"):
        for mode in ("saturation", "fixed"):
            assert results["ingest"][name][mode]["requests"] > 0, (name, mode)
            assert results["ingest"][name][mode]["errors"] == 0, (name, mode)
    assert results["ingest"]["async_single"]["unloaded"]["requests"] > 0
    assert {"rules_0", "rules_20", "matching_only"} == set(results["processor"])
    assert all(d["events_per_second"] > 0 for d in results["processor"].values())
    assert [r["rules"] for r in results["rule_cost"]] == [0, 1, 5, 10, 20, 50]
    assert all(r["events_per_second"] > 0 and r["rows_per_event"] > 0 for r in results["rule_cost"])
    assert results["end_to_end"]["events"] > 0
    assert results["reference"]["bare_asgi"]["requests"] > 0
    assert results["reference"]["redis_xadd"]["ops_per_second"] > 0
    assert set(results["ratios"]) == {
        "async_single_vs_bare_asgi_requests",
        "async_single_vs_redis_xadd_events",
        "batch_vs_redis_xadd_events",
        "sync_vs_redis_xadd_events",
    }
    for row in (
        "async single, saturation",
        "processor, 20 rules",
        "reference: bare ASGI",
        "cost per rule",
    ):
        assert row in printed
    assert len(results["targets"]) == 7


def test_client_bench_measures_track_cost_and_the_ratio_to_wrk(
    redis_server: Server, postgres_server: Server
) -> None:
    out = run_bench(
        redis_server,
        postgres_server,
        *("bench.client", "--seconds", "1", "--rounds", "1"),
        *("--events", "2000", "--track-events", "2000"),
    )
    results = json.loads(out)
    assert results["track_queue_only"]["cpu_us"] > 0
    [round_] = results["rounds"]
    assert round_["client_1_sender"]["events_per_second"] > 0
    assert results["median_ratio_client_to_wrk_keyed"] > 0
