"""bench/claims.py in its short form against the test servers: every scenario makes
claims through Granian without an error. The numbers are not judged here."""

from __future__ import annotations

import json

import pytest

from bricqs_devstack.servers import Server
from tests.perf.test_bench_smoke import run_bench

pytestmark = pytest.mark.slow


def test_claims_bench_smoke_claims_in_every_scenario(
    redis_server: Server, postgres_server: Server
) -> None:
    out = run_bench(redis_server, postgres_server, "bench.claims", "--smoke")
    medians = json.loads(out.strip().splitlines()[-1])["medians"]
    assert set(medians) == {"one", "hundred", "pool", "award"}
    for scenario, figures in medians.items():
        assert figures["errors"] == 0, (scenario, figures)
        assert figures["api_cpu_ms"] > 0, (scenario, figures)
    # Rates are left alone: on a loaded machine a short run may end before any answer.
    assert all(medians[s]["claims_stored"] > 0 for s in ("one", "hundred", "pool"))
