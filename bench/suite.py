"""`make bench`: the whole system on loopback, measured, in one table and one JSON file.

    uv run --locked python -m bench [--smoke] [--only ingest,processor,reference,leaderboards]

Starts throwaway Redis and PostgreSQL (durable settings), then measures, one Granian
worker for each HTTP app:
- ingest: async single, batch (100 events a request) and sync (20 active rules) --
  requests/s, events/s, p50/p99/p99.9 at saturation (wrk, closed loop) and at a fixed
  offered rate of 70% of that saturation (open loop); async single unloaded too (one
  connection);
- processor: events/s of one replica draining a full stream, with 0, 1, 5, 10, 20 and 50
  active rules, and PostgreSQL's rows written and statements run per event for each (the
  cost table: what a rule adds); end-to-end lag (receipt -> committed) at a fixed event
  rate, with 20 rules;
- references: a bare ASGI app that only decodes the body and does one XADD
  (`bench/bare_asgi.py`, same Granian settings and event loop), and redis-benchmark XADD with
  pipelining; and our ratio to each.
- leaderboards (only when named in --only: it fills a board of 1M participants): see
  `bench/leaderboards.py`.
Results go to `.bench/bench-<time>.json` (and `.bench/latest.json`); `--compare` prints
the change against an earlier file. Numbers from a shared machine drift between runs:
compare ratios within one run. `--smoke` runs every step for about a second (for CI).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench import leaderboards, scaling, workload
from bench.bare_asgi import LOOP
from bench.load import LoadResult, open_loop, redis_xadd, wrk
from bench.processor import enable_statement_stats, end_to_end, rule_cost
from bench.rule_engine import TWENTY_RULES, make_facts, matching_rate
from bench.stack import REPO, Stack

SINGLE = "/api/v1/ingest/events"
BATCH = "/api/v1/ingest/events/batch"
SYNC = "/api/v1/ingest/events/sync"
FIXED_SHARE = 0.7  # the fixed offered rate, as a share of the measured saturation

FULL = {
    "saturation_s": 10,
    "fixed_s": 10,
    "unloaded_s": 5,
    "drain_events": {0: 40_000, 1: 20_000, 5: 20_000, 10: 20_000, 20: 20_000, 50: 10_000},
    "e2e_rate": 5_000,
    "e2e_s": 15,
    "xadd_requests": 400_000,
    "matching_facts": 50_000,
}
SMOKE = {
    "saturation_s": 1,
    "fixed_s": 1,
    "unloaded_s": 1,
    "drain_events": {0: 500, 1: 300, 5: 300, 10: 300, 20: 300, 50: 300},
    "e2e_rate": 200,
    "e2e_s": 1,
    "xadd_requests": 20_000,
    "matching_facts": 1_000,
}
TARGETS = {
    "single_vs_bare": 0.75,
    "single_fixed_p99_ms": 50.0,
    "batch_events_per_second": 40_000.0,
    "processor_20_rules_events_per_second": 8_000.0,
    "processor_20_vs_0_rules": 0.35,
    "e2e_p99_ms": 1_000.0,
}


def _ingest(stack: Stack, plan: dict[str, Any], results: dict[str, Any]) -> None:
    plain = stack.project("bench-ingest")
    ruled = stack.project("bench-sync", TWENTY_RULES)
    e2e = stack.project("bench-e2e", TWENTY_RULES)
    port, child = stack.granian("bricqs_ingest.app:create_app", GRANIAN_LOOP=LOOP)
    try:
        singles = workload.single_bodies(2_000)
        batches = workload.batch_bodies(100)
        cases = [
            ("async_single", SINGLE, plain.key, singles, 1, 50, 64, 202),
            ("batch", BATCH, plain.key, batches, 100, 16, 16, 202),
            ("sync", SYNC, ruled.key, singles, 1, 32, 32, 200),
        ]
        for name, path, key, bodies, per_request, conns, fixed_conns, status in cases:
            row: dict[str, Any] = {"events_per_request": per_request}
            if name == "async_single":
                unloaded = wrk(port, path, key, bodies, connections=1, seconds=plan["unloaded_s"])
                row["unloaded"] = unloaded.as_dict(per_request)
                stack.reset_stream()
            saturation = wrk(
                port, path, key, bodies, connections=conns, seconds=plan["saturation_s"]
            )
            row["saturation"] = saturation.as_dict(per_request) | {"connections": conns}
            stack.reset_stream()
            rate = max(1.0, FIXED_SHARE * saturation.rate)
            fixed = open_loop(
                port,
                path,
                key,
                bodies,
                rate=rate,
                seconds=plan["fixed_s"],
                connections=fixed_conns,
                expect=status,
            )
            row["fixed"] = fixed.as_dict(per_request) | {"connections": fixed_conns}
            stack.reset_stream()
            results["ingest"][name] = row
            _progress(name, saturation, fixed)
        results["end_to_end"] = end_to_end(
            stack, e2e, port, rate=plan["e2e_rate"], seconds=plan["e2e_s"]
        )
        print(f"  end_to_end: p99 {results['end_to_end']['lag_p99_ms']} ms", file=sys.stderr)
    finally:
        stack.stop(child)


def _processor(stack: Stack, plan: dict[str, Any], results: dict[str, Any]) -> None:
    # Pure matching with the 20 rules, the processor's CPU floor.
    results["processor"]["matching_only"] = matching_rate(make_facts(plan["matching_facts"]))
    results["rule_cost"] = rule_cost(stack, plan["drain_events"])
    for row in results["rule_cost"]:
        if row["rules"] in (0, 20):
            results["processor"][f"rules_{row['rules']}"] = row
    stack.reset_stream()


def _references(stack: Stack, plan: dict[str, Any], results: dict[str, Any]) -> None:
    url = urlparse(stack.redis_url)
    results["reference"]["redis_xadd"] = redis_xadd(
        url.port or 6379,
        db=int(url.path.strip("/") or 0),
        requests=plan["xadd_requests"],
        pipeline=16,
        payload_bytes=240,
    )
    bare_port, child = stack.granian("bench.bare_asgi:app", GRANIAN_LOOP=LOOP)
    try:
        bare = wrk(
            bare_port,
            SINGLE,
            "unused",
            workload.single_bodies(2_000),
            connections=50,
            seconds=plan["saturation_s"],
        )
        results["reference"]["bare_asgi"] = bare.as_dict() | {"connections": 50}
        print(f"  bare ASGI: {bare.rate:,.0f} req/s", file=sys.stderr)
    finally:
        stack.stop(child)
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    client.delete("bench:reference", "bench:bare")
    client.close()


def _progress(name: str, saturation: LoadResult, fixed: LoadResult) -> None:
    print(
        f"  {name}: saturation {saturation.rate:,.0f} req/s (p99 {saturation.p99_ms:.1f} ms);"
        f" fixed {fixed.offered_rate or 0:,.0f} req/s p99 {fixed.p99_ms:.1f} ms",
        file=sys.stderr,
    )


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Our figures over the references' (where both were measured)."""
    out: dict[str, float] = {}
    ingest, ref = results.get("ingest", {}), results.get("reference", {})
    bare = ref.get("bare_asgi", {}).get("requests_per_second")
    xadd = ref.get("redis_xadd", {}).get("ops_per_second")
    for name in ("async_single", "batch", "sync"):
        sat = ingest.get(name, {}).get("saturation")
        if sat and bare and name == "async_single":
            out["async_single_vs_bare_asgi_requests"] = round(sat["requests_per_second"] / bare, 3)
        if sat and xadd:
            out[f"{name}_vs_redis_xadd_events"] = round(sat["events_per_second"] / xadd, 3)
    return out


def check_targets(results: dict[str, Any]) -> dict[str, bool]:
    """The issue's targets, where this run measured what they need."""
    checks: dict[str, bool] = {}
    r, ingest = results["ratios"], results.get("ingest", {})
    if "async_single_vs_bare_asgi_requests" in r:
        checks["async single >= 0.75 x bare ASGI req/s"] = (
            r["async_single_vs_bare_asgi_requests"] >= TARGETS["single_vs_bare"]
        )
    if "async_single" in ingest:
        checks["async single p99 < 50 ms at 70% of saturation"] = (
            ingest["async_single"]["fixed"]["p99_ms"] < TARGETS["single_fixed_p99_ms"]
        )
    if "batch" in ingest:
        checks["batch >= 40,000 events/s"] = (
            ingest["batch"]["saturation"]["events_per_second"] >= TARGETS["batch_events_per_second"]
        )
    if "sync" in ingest:
        checks["sync (20 rules) p99 < 50 ms at 70% of saturation"] = (
            ingest["sync"]["fixed"]["p99_ms"] < 50.0
        )
    processor = results.get("processor", {})
    if "rules_20" in processor:
        checks["processor >= 8,000 events/s with 20 rules"] = (
            processor["rules_20"]["events_per_second"]
            >= TARGETS["processor_20_rules_events_per_second"]
        )
        if processor["rules_20"].get("vs_0_rules") is not None:
            checks["processor with 20 rules >= 0.35 x its 0-rule drain"] = (
                processor["rules_20"]["vs_0_rules"] >= TARGETS["processor_20_vs_0_rules"]
            )
    if "end_to_end" in results:
        e2e = results["end_to_end"]
        checks[f"end-to-end p99 < 1 s at {e2e['rate']:,} events/s"] = (
            max(e2e["lag_p99_ms"], e2e["commit_lag_p99_ms"]) < TARGETS["e2e_p99_ms"]
        )
    return checks


def table(results: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    """The human-readable table of a run (with the change against `previous`)."""
    lines = [
        f"bricqs bench ({results['mode']}, {results['started_at']}, {results['machine']})",
        f"{'what':<34}{'offered/s':>10}{'req/s':>10}{'events/s':>11}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'errors':>8}",
    ]

    def row(label: str, d: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        offered = d.get("offered_rate")
        change = ""
        if old and old.get("events_per_second"):
            change = f"  ({d['events_per_second'] / old['events_per_second']:.2f}x ev/s"
            change += f", p99 {old['p99_ms']:.1f}->{d['p99_ms']:.1f})"
        lines.append(
            f"{label:<34}{(f'{offered:,.0f}' if offered else '-'):>10}"
            f"{d['requests_per_second']:>10,.0f}{d['events_per_second']:>11,.0f}"
            f"{d['p50_ms']:>9.2f}{d['p99_ms']:>9.2f}{d['p999_ms']:>10.2f}{d['errors']:>8}{change}"
        )

    names = {"async_single": "async single", "batch": "batch (100/req)", "sync": "sync (20 rules)"}
    old_ingest = (previous or {}).get("ingest", {})
    for name, rows in results.get("ingest", {}).items():
        old = old_ingest.get(name, {})
        if "unloaded" in rows:
            row(f"{names[name]}, 1 connection", rows["unloaded"], old.get("unloaded"))
        conns = rows["saturation"]["connections"]
        row(f"{names[name]}, saturation ({conns} conn)", rows["saturation"], old.get("saturation"))
        row(f"{names[name]}, fixed 70% of saturation", rows["fixed"], old.get("fixed"))
    ref = results.get("reference", {})
    if "bare_asgi" in ref:
        row("reference: bare ASGI + XADD, sat.", ref["bare_asgi"])
    if "redis_xadd" in ref:
        x = ref["redis_xadd"]
        lines.append(
            f"{'reference: redis-benchmark XADD -P' + str(x['pipeline']):<34}{'-':>10}"
            f"{x['ops_per_second']:>10,.0f}{x['ops_per_second']:>11,.0f}{x['p50_ms']:>9.2f}"
            f"{x['p99_ms']:>9.2f}{'-':>10}{'-':>8}"
        )
    old_proc = (previous or {}).get("processor", {})
    for name, d in results.get("processor", {}).items():
        old = old_proc.get(name)
        change = f"  ({d['events_per_second'] / old['events_per_second']:.2f}x)" if old else ""
        label = f"processor, {d['rules']} rules, 1 replica"
        if name == "matching_only":
            label = "  rule matching alone (no I/O)"
        lines.append(f"{label:<34}{'-':>10}{'-':>10}{d['events_per_second']:>11,.0f}{change}")
    if results.get("rule_cost"):
        lines.append(
            f"{'cost per rule (one replica)':<34}{'rules':>10}{'events/s':>11}"
            f"{'vs 0':>8}{'rows/ev':>9}{'stmts/ev':>10}{'proc us/ev':>12}{'pg us/ev':>10}"
        )

        def figure(value: float | None, form: str) -> str:
            return "-" if value is None else format(value, form)

        for d in results["rule_cost"]:
            lines.append(
                f"{'':<34}{d['rules']:>10}{d['events_per_second']:>11,.0f}"
                f"{d.get('vs_0_rules', 0):>8.2f}{d['rows_per_event']:>9.2f}"
                f"{figure(d['statements_per_event'], '.3f'):>10}"
                f"{figure(d['processor_cpu_us_per_event'], '.0f'):>12}"
                f"{figure(d['postgres_cpu_us_per_event'], '.0f'):>10}"
            )
    if "end_to_end" in results:
        e = results["end_to_end"]
        lines.append(
            f"{'end to end (20 rules), lag':<34}{e['rate']:>10,}{'-':>10}"
            f"{e['ingest']['events_per_second']:>11,.0f}{e['lag_p50_ms']:>9.2f}"
            f"{e['lag_p99_ms']:>9.2f}{e['lag_p999_ms']:>10.2f}{e['ingest']['errors']:>8}"
        )
        lines.append(
            f"{'  receipt -> commit p99 (histogram)':<34}{'':>41}{e['commit_lag_p99_ms']:>9.2f}"
        )
    if results["ratios"]:
        lines.append("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in results["ratios"].items()))
    for label, ok in results["targets"].items():
        lines.append(f"  [{'met' if ok else 'NOT met'}] {label}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 if a step failed or measured nothing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="about a second per step (CI)")
    parser.add_argument(
        "--only",
        default="reference,ingest,processor,scaling",
        help="comma-separated parts to run",
    )
    parser.add_argument("--json", type=Path, help="write results here (default .bench/)")
    parser.add_argument("--compare", type=Path, help="an earlier results file to compare with")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of starting one")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    parts = set(args.only.split(","))
    results: dict[str, Any] = {
        "mode": "smoke" if args.smoke else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}",
        "plan": {k: v for k, v in plan.items() if k != "drain_events"},
        "ingest": {},
        "processor": {},
        "reference": {},
    }
    started = time.monotonic()
    stack = Stack.start(args.redis_url, args.database_url)
    try:
        if args.database_url is None:
            # For the cost table's statements per event (a given server may lack it).
            enable_statement_stats(stack)
        if "reference" in parts:
            _references(stack, plan, results)
        if "ingest" in parts:
            _ingest(stack, plan, results)
        if "processor" in parts:
            _processor(stack, plan, results)
        if "scaling" in parts:
            results["scaling"] = scaling.run(stack, smoke=args.smoke)
        if "leaderboards" in parts:
            results["leaderboards"] = leaderboards.run(stack, args.smoke)
    finally:
        stack.close()
    results["seconds"] = round(time.monotonic() - started, 1)
    results["ratios"] = ratios(results)
    results["targets"] = check_targets(results)
    out = args.json or REPO / ".bench" / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    if args.json is None:
        (out.parent / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    previous = json.loads(args.compare.read_text()) if args.compare else None
    print(table(results, previous))
    if "scaling" in results:
        print(scaling.table(results["scaling"]))
    print(f"results: {out}")
    return 0 if _measured(results) else 1


def _measured(results: dict[str, Any]) -> bool:
    """Whether every part that ran produced answers (a crash raises before this)."""
    for rows in results["ingest"].values():
        for key in ("saturation", "fixed"):
            if rows[key]["requests"] == 0:
                return False
    rows = [*results["processor"].values(), *results.get("rule_cost", [])]
    return all(d["events_per_second"] > 0 for d in rows)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
