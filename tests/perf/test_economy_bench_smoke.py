"""bench/economy.py in a short form against the test servers: the economy (a boost and an
expiring rule) is at work in the measured project and a ratio comes out. The numbers are
not judged here."""

from __future__ import annotations

import json

import pytest

from bricqs_devstack.servers import Server
from tests.perf.test_bench_smoke import run_bench

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("expiring", ["add", "within"])
def test_economy_bench_measures_with_the_boost_and_the_expiring_rule_at_work(
    redis_server: Server, postgres_server: Server, expiring: str
) -> None:
    args = ("--batches", "2", "--size", "20", "--runs", "1", "--expiring", expiring)
    out = run_bench(redis_server, postgres_server, "bench.economy", *args)
    result = json.loads(out[out.index("{") :])
    assert result["median_ratio"] > 0
