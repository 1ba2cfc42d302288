"""`python -m bench.historical_import --smoke`: live traffic alone, then with a historical
import under way, and the live p99 of both, with one processor and with a replica of its
own for the import. The numbers are not judged here (unit tests
never assert timings); the full form's figures are in the issue note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bricqs_devstack.servers import Server
from tests.perf.test_bench_smoke import run_bench

pytestmark = pytest.mark.slow


def test_the_import_bench_measures_live_lag_with_and_without_an_import(
    redis_server: Server, postgres_server: Server, tmp_path: Path
) -> None:
    out = tmp_path / "import.json"
    printed = run_bench(
        redis_server,
        postgres_server,
        "bench.historical_import",
        "--smoke",
        "--layouts",
        "one,split",
        "--json",
        str(out),
    )
    assert "one: medians over 1 rounds" in printed
    assert "split: medians over 1 rounds" in printed
    for layout in json.loads(out.read_text()).values():
        (round_,) = layout["rounds"]
        for phase in ("without", "with"):
            assert round_[phase]["live_events"] == round_[phase]["live_expected"] > 0
            assert round_[phase]["lag_p99_ms"] > 0
        assert round_["with"]["imported"] == 2_000
