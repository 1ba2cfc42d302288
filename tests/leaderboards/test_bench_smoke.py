"""`python -m bench --only leaderboards --smoke`: the leaderboard benchmark runs end to end
on small boards (the 1M board is only in the full run) and reports every figure."""

from __future__ import annotations

import json
from pathlib import Path

from bricqs_devstack.servers import Server
from tests.perf.test_bench_smoke import run_bench


def test_leaderboard_bench_smoke_reports_latencies_memory_and_the_processor_ratio(
    redis_server: Server, postgres_server: Server, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    run_bench(
        redis_server,
        postgres_server,
        "bench",
        "--smoke",
        "--only",
        "leaderboards",
        "--json",
        str(out),
    )
    results = json.loads(out.read_text())["leaderboards"]
    reads = results["reads"]
    for size in ("200", "1000"):
        for kind in ("top10", "rank", "around5"):
            assert reads[size][kind]["requests"] == 50
            assert 0 < reads[size][kind]["p50_ms"] <= reads[size][kind]["p99_ms"]
        assert reads[size]["mb_per_million"] > 0
    assert set(reads["ratio_p50_largest_vs_smallest"]) == {"top10", "rank", "around5"}
    (pair,) = results["processor"]["runs"]
    assert pair["without"] > 0 and pair["with_points_board"] > 0
