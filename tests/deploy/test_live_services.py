"""The services, started as their images start them and configured as the prod manifests
configure them, serve every metric (with its labels) that the alerts and the dashboard
query, labelled counters from the start (at 0), and answer on the probes' paths."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from bricqs.stream import stream_key
from bricqs_devstack.servers import Server, free_port
from tests.conftest import make_tenant, service_env
from tests.deploy.helpers import (
    DEPLOY,
    READY_CHECKS,
    VENV_BIN,
    alert_rules,
    container_env,
    dashboard_expressions,
    env_for,
    image_argv,
    named,
    objects,
    pod_spec,
    running,
    wait_for,
)

pytestmark = pytest.mark.slow

# Labels Prometheus (and its operator) attach to every scraped series.
TARGET_LABELS = {"job", "instance", "namespace", "service", "pod", "container", "endpoint"}
# Metrics no service of ours exports, and who does.
EXTERNAL_METRICS = {
    "up": "Prometheus, one series per scrape target",
    "redis_memory_used_bytes": "redis_exporter",
    "redis_memory_max_bytes": "redis_exporter",
}
# Regex matchers that select failure series only (a healthy run has none of them).
FAILURE_MATCHERS = {("status", "5..")}

Series = dict[str, list[dict[str, str]]]


@dataclass
class Live:
    """What the running services served."""

    series: dict[str, Series]
    """Per service: sample name -> the label sets it was served with."""
    urls: dict[str, str]

    def everything(self) -> Series:
        """All services' series together."""
        merged: Series = {}
        for series in self.series.values():
            for name, labels in series.items():
                merged.setdefault(name, []).extend(labels)
        return merged


def scrape(url: str) -> Series:
    """The samples of a /metrics page by name, with their label sets."""
    series: Series = {}
    for name, labels, _ in samples(url):
        series.setdefault(name, []).append(labels)
    return series


def samples(url: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample of a /metrics page."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(url: str, name: str, **labels: str) -> float:
    """The value of one sample (0 when it is not served)."""
    return sum(v for n, ls, v in samples(url) if n == name and labels.items() <= ls.items())


@pytest.fixture(scope="module")
def live(
    redis_server: Server, postgres_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    logs = tmp_path_factory.mktemp("live")
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    tenant = make_tenant(postgres_server.url)
    ingest_port, processor_port, failing_port = free_port(), free_port(), free_port()
    api_port, dispatcher_port = free_port(), free_port()
    processor_env = {"METRICS_HOST": "127.0.0.1", "STATS_INTERVAL_MS": "200"}
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with (
        running(
            image_argv("ingest", host="127.0.0.1", port=str(ingest_port)),
            # Every endpoint in one process (the manifests split sync events into
            # bricqs-ingest-sync, the same image): every ingest series in one scrape.
            env_for("ingest", redis_server.url, postgres_server.url, INGEST_ENDPOINTS="all"),
            f"http://127.0.0.1:{ingest_port}",
            logs / "ingest.log",
        ) as ingest,
        running(
            image_argv("processor"),
            env_for(
                "processor",
                redis_server.url,
                postgres_server.url,
                METRICS_PORT=str(processor_port),
                **processor_env,
            ),
            f"http://127.0.0.1:{processor_port}",
            logs / "processor.log",
        ) as processor,
        # A processor that cannot reach Redis: its failure counter gets its labels.
        running(
            image_argv("processor"),
            env_for(
                "processor",
                dead_redis,
                postgres_server.url,
                METRICS_PORT=str(failing_port),
                BACKOFF_MAX_MS="200",
                **processor_env,
            ),
            f"http://127.0.0.1:{failing_port}",
            logs / "failing.log",
        ) as failing,
        running(
            image_argv("api", host="127.0.0.1", port=str(api_port)),
            env_for("api", redis_server.url, postgres_server.url),
            f"http://127.0.0.1:{api_port}",
            logs / "api.log",
        ) as api,
        running(
            image_argv("dispatcher"),
            env_for(
                "dispatcher",
                redis_server.url,
                postgres_server.url,
                METRICS_PORT=str(dispatcher_port),
                METRICS_HOST="127.0.0.1",
            ),
            f"http://127.0.0.1:{dispatcher_port}",
            logs / "dispatcher.log",
        ) as dispatcher,
    ):
        send_traffic(ingest.url, tenant.live_key)
        send_api_traffic(api.url, tenant.live_key)
        # An entry that is no envelope: dead-lettered (decode_error).
        client.xadd(stream_key(0), {b"e": b"\xc1 not msgpack"})

        def processor_saw_everything() -> bool:
            series = scrape(processor.url)
            outcomes = {s.get("outcome") for s in series.get("bricqs_processor_events_total", [])}
            return (
                "stored" in outcomes
                and value(
                    processor.url, "bricqs_processor_dead_lettered_total", reason="decode_error"
                )
                > 0
                and "bricqs_processor_group_lag" in series
                and "bricqs_processor_dead_letter_length" in series
            )

        wait_for(processor_saw_everything, 30, "the processor to store events and dead-letter one")
        wait_for(
            lambda: value(failing.url, "bricqs_processor_failures_total", dependency="redis") > 0,
            30,
            "the failing processor to count a Redis failure",
        )
        yield Live(
            series={
                "ingest": scrape(ingest.url),
                "processor": scrape(processor.url) | scrape(failing.url),
                "api": scrape(api.url),
                "dispatcher": scrape(dispatcher.url),
            },
            urls={"ingest": ingest.url, "processor": processor.url, "api": api.url},
        )
    client.close()


def send_traffic(base: str, key: str) -> None:
    """Accepted, duplicate and rejected events on every ingest endpoint."""
    headers = {"X-API-Key": key}
    event = {"event_name": "deploy_check", "participant_id": "p1"}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
        assert http.post("/api/v1/ingest/events", json=event).status_code == 202
        keyed = {**event, "idempotency_key": f"deploy-{datetime.now(UTC).timestamp()}"}
        assert http.post("/api/v1/ingest/events", json=keyed).status_code == 202
        assert http.post("/api/v1/ingest/events", json=keyed).json()["duplicate"] is True
        assert http.post("/api/v1/ingest/events", json={"event_name": ""}).status_code == 422
        batch = {"events": [event, {**event, "participant_id": "p2"}, {"event_name": "?"}]}
        assert http.post("/api/v1/ingest/events/batch", json=batch).status_code == 202
        assert http.post("/api/v1/ingest/events/sync", json=event).status_code == 200


def send_api_traffic(base: str, key: str) -> None:
    """Reads and writes on the api, answered 2xx and 4xx."""
    headers = {"X-API-Key": key}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
        rule = {
            "code": "deploy-check",
            "name": "Deploy check",
            "trigger": {"fact_type": "custom.deploy_check"},
            "amount": {"fixed": 1},
        }
        assert http.post("/api/v1/gamify/admin/points-rules", json=rule).status_code == 201
        assert http.get("/api/v1/gamify/admin/points-rules").status_code == 200
        assert http.get("/api/v1/gamify/participants/p1/state").status_code == 200
        assert http.get("/api/v1/events/catalog").status_code == 200
        assert http.get("/api/v1/gamify/admin/badges/nope").status_code == 404
        assert http.get("/api/v1/events/catalog", headers={"X-API-Key": ""}).status_code == 401


def selectors(expr: Any) -> list[Any]:
    """Every vector selector in a parsed expression."""
    found: list[Any] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(expr, visit)
    return found


def check_expression(expr_text: str, series: Series) -> list[str]:
    """What in one PromQL expression the served series cannot satisfy."""
    problems: list[str] = []
    expr = promql_parser.parse(expr_text)
    for selector in selectors(expr):
        name = selector.name
        if name in EXTERNAL_METRICS:
            continue
        if name not in series:
            problems.append(f"{name}: not served")
            continue
        for matcher in selector.matchers.matchers:
            label, op, value = matcher.name, matcher.op, matcher.value
            values = {s[label] for s in series[name] if label in s}
            if not values:
                problems.append(f"{name}: no label {label}")
            elif op == promql_parser.MatchOp.Equal and value not in values:
                problems.append(f'{name}: no series with {label}="{value}" (has {values})')
            elif (
                op == promql_parser.MatchOp.Re
                and (label, value) not in FAILURE_MATCHERS
                # PromQL regexes are anchored at both ends.
                and not any(re.fullmatch(value, v) for v in values)
            ):
                problems.append(f'{name}: no series with {label}=~"{value}" (has {values})')

    def grouping(node: Any) -> bool:
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            inner = {s.name for s in selectors(node.expr)} - set(EXTERNAL_METRICS)
            labels_served = {k for n in inner for s in series.get(n, []) for k in s}
            for label in node.modifier.labels:
                if inner and label not in labels_served | TARGET_LABELS:
                    problems.append(f"grouping by {label}, which {sorted(inner)} lack")
        return True

    promql_parser.walk(expr, grouping)
    return problems


def test_every_alert_and_panel_query_matches_series_the_services_serve(live: Live) -> None:
    served = live.everything()
    problems = {}
    for rule in alert_rules():
        found = check_expression(rule["expr"], served)
        if found:
            problems[rule["alert"]] = found
    for expr in dashboard_expressions():
        found = check_expression(expr, served)
        if found:
            problems[expr[:80]] = found
    assert not problems, json.dumps(problems, indent=2)


def test_the_check_catches_unknown_names_labels_values_and_groupings(live: Live) -> None:
    served = live.everything()
    assert check_expression("rate(bricqs_http_request_duration_seconds_count[5m])", served) == []
    for wrong in (
        "rate(bricqs_ingest_requests_total[5m])",
        'bricqs_http_request_duration_seconds_count{service="ingestion"}',
        'bricqs_http_request_duration_seconds_count{route=~"/v2/.*"}',
        'bricqs_processor_group_lag{shard="0"}',
        "sum by (shard) (bricqs_processor_group_lag)",
    ):
        assert check_expression(wrong, served), wrong


def test_metrics_from_elsewhere_are_named_with_their_source_in_the_readme(live: Live) -> None:
    used = {
        s.name
        for text in [r["expr"] for r in alert_rules()] + dashboard_expressions()
        for s in selectors(promql_parser.parse(text))
    }
    served = set(live.everything())
    foreign = used - served
    assert foreign <= set(EXTERNAL_METRICS), f"unknown metrics: {foreign - set(EXTERNAL_METRICS)}"
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for name in foreign - {"up"}:
        assert name in readme and EXTERNAL_METRICS[name] in readme, name


def test_services_labels_that_collide_with_target_labels_are_honoured(live: Live) -> None:
    for service, series in live.series.items():
        labels = {k for samples in series.values() for s in samples for k in s}
        if labels & TARGET_LABELS:
            monitor = named("prod", "ServiceMonitor", f"bricqs-{service}")
            assert all(e["honorLabels"] for e in monitor["spec"]["endpoints"]), service


@pytest.mark.parametrize("service", ["ingest", "processor", "api"])
def test_probe_paths_answer_ok_on_the_running_service(live: Live, service: str) -> None:
    dep = named("prod", "Deployment", f"bricqs-{service}")
    (container,) = pod_spec(dep)["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        response = httpx.get(live.urls[service] + path, timeout=5)
        assert response.status_code == 200, f"{service} {probe} {path}: {response.text}"
    # Readiness checks what the manifests' probe timeouts are sized for (and ingest's
    # only Redis: a PostgreSQL outage must not take ingest pods out of their Service).
    ready = httpx.get(live.urls[service] + "/health/ready", timeout=5).json()
    assert set(ready["checks"]) == READY_CHECKS[service]


@pytest.mark.parametrize(
    ("service", "name", "label", "values"),
    [
        (
            "ingest",
            "bricqs_ingest_events_total",
            "outcome",
            {"accepted", "rejected", "duplicate", "rate_limited"},
        ),
        ("ingest", "bricqs_ingest_events_total", "endpoint", {"single", "batch", "sync"}),
        (
            "processor",
            "bricqs_processor_dead_lettered_total",
            "reason",
            {"decode_error", "rejected", "max_deliveries"},
        ),
        ("processor", "bricqs_processor_failures_total", "dependency", {"redis", "database"}),
    ],
)
def test_labelled_counters_are_served_at_zero_before_their_first_event(
    redis_server: Server,
    postgres_server: Server,
    tmp_path: Path,
    service: str,
    name: str,
    label: str,
    values: set[str],
) -> None:
    # A fresh process that has seen nothing: every series is there, at 0, so rate() and
    # increase() see the first event (a series born at 1 would hide it).
    port = free_port()
    argv = (
        image_argv("ingest", host="127.0.0.1", port=str(port))
        if service == "ingest"
        else image_argv("processor")
    )
    # A Redis database of its own: no stream entries left by other tests to process.
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/7"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    env = env_for(service, redis_url, postgres_server.url)
    if service == "processor":
        env.update(METRICS_HOST="127.0.0.1", METRICS_PORT=str(port), CONSUMER_NAME="fresh")
    with running(argv, env, f"http://127.0.0.1:{port}", tmp_path / f"{service}.log") as fresh:
        served = [(ls, v) for n, ls, v in samples(fresh.url) if n == name]
    assert {ls[label] for ls, _ in served} == values
    assert all(v == 0 for _, v in served), served


def test_migration_job_command_runs(postgres_server: Server, tmp_path: Path) -> None:
    job = named("prod", "Job", "bricqs-migrate")
    (container,) = pod_spec(job)["containers"]
    command = [str(VENV_BIN / Path(container["command"][0]).name), *container["command"][1:]]
    env = {**service_env("redis://unused", postgres_server.url)}
    env["DATABASE_DIRECT_URL"] = postgres_server.url  # the optional key, as behind PgBouncer
    assert set(container_env("prod", container).secrets) == {"DATABASE_URL", "DATABASE_DIRECT_URL"}
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["applied"] == []  # the fixture migrated already
    assert objects("prod", "Job")
