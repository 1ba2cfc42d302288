"""The custom resources kubernetes-validate has no schema for (KEDA, Prometheus operator)
and the Grafana dashboard: required fields, types, and that what they reference exists."""

from __future__ import annotations

import json
import re

import promql_parser
import pytest

from bricqs.stream import CONSUMER_GROUP, stream_key
from tests.deploy.helpers import (
    DASHBOARD,
    DEPLOY,
    HTTP_SERVICES,
    alert_rules,
    container_env,
    dashboard_expressions,
    named,
    objects,
    pod_spec,
)

DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
SEVERITIES = {"critical", "warning", "info"}
# Metadata the redis-streams scaler understands (KEDA 2.x), and the auth parameters.
KEDA_REDIS_STREAMS_METADATA = {
    "address",
    "addressFromEnv",
    "addresses",
    "host",
    "hostFromEnv",
    "port",
    "portFromEnv",
    "usernameFromEnv",
    "passwordFromEnv",
    "stream",
    "consumerGroup",
    "pendingEntriesCount",
    "streamLength",
    "lagCount",
    "activationLagCount",
    "databaseIndex",
    "enableTLS",
    "unsafeSsl",
}
KEDA_REDIS_AUTH_PARAMETERS = {
    "address",
    "addresses",
    "host",
    "port",
    "username",
    "password",
    "tls",
    "ca",
}
# The prod overlays: one Redis, and the variant on a Redis Cluster.
PROD_OVERLAYS = ("prod", "prod-redis-cluster")


def readme_anchors() -> set[str]:
    """GitHub's anchors for the headings of deploy/README.md."""
    anchors = set()
    for line in (DEPLOY / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def processor_shards(overlay: str = "prod") -> int:
    """STREAM_SHARDS as the overlay's processor gets it."""
    dep = named(overlay, "Deployment", "bricqs-processor")
    env = container_env(overlay, pod_spec(dep)["containers"][0]).values
    return int(env.get("STREAM_SHARDS", "1"))


# ---------------------------------------------------------------------------------------
# KEDA


@pytest.mark.parametrize("overlay", PROD_OVERLAYS)
def test_scaled_object_scales_the_processor_on_the_total_lag_of_every_shard(overlay: str) -> None:
    (scaled,) = objects(overlay, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    target = named(overlay, "Deployment", spec["scaleTargetRef"]["name"])
    assert target["metadata"]["name"] == "bricqs-processor"
    assert isinstance(spec["minReplicaCount"], int) and isinstance(spec["maxReplicaCount"], int)
    # Never zero: the processor is the only consumer, and one pod must survive a drain.
    assert 2 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    assert isinstance(spec["pollingInterval"], int) and isinstance(spec["cooldownPeriod"], int)

    streams = []
    cluster = overlay == "prod-redis-cluster"
    for trigger in spec["triggers"]:
        assert trigger["type"] == ("redis-cluster-streams" if cluster else "redis-streams")
        metadata = trigger["metadata"]
        assert set(metadata) <= KEDA_REDIS_STREAMS_METADATA, set(metadata)
        # KEDA reads metadata as strings; a YAML number here is an admission error.
        assert all(isinstance(v, str) for v in metadata.values()), metadata
        assert metadata["consumerGroup"] == CONSUMER_GROUP
        # lagCount selects the XINFO GROUPS lag; KEDA then requires activationLagCount.
        lag, activation = int(metadata["lagCount"]), int(metadata["activationLagCount"])
        assert 0 <= activation < lag
        assert "pendingEntriesCount" not in metadata and "streamLength" not in metadata
        streams.append(metadata["stream"])
        auth = named(overlay, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        parameters = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
        assert parameters <= KEDA_REDIS_AUTH_PARAMETERS
        assert ("addresses" if cluster else "address") in parameters
    assert sorted(streams) == sorted(stream_key(i) for i in range(processor_shards(overlay)))
    # KEDA scales to the largest trigger: only a formula over all of them is the total.
    modifiers = spec["advanced"]["scalingModifiers"]
    names = [trigger["name"] for trigger in spec["triggers"]]
    assert [t.strip() for t in modifiers["formula"].split("+")] == names
    assert modifiers["metricType"] == "AverageValue"
    assert 0 <= int(modifiers["activationTarget"]) < int(modifiers["target"])


def test_the_redis_cluster_variant_puts_every_redis_client_in_cluster_mode() -> None:
    for name in ("bricqs-ingest", "bricqs-processor", "bricqs-api"):
        dep = named("prod-redis-cluster", "Deployment", name)
        env = container_env("prod-redis-cluster", pod_spec(dep)["containers"][0]).values
        assert env.get("REDIS_CLUSTER") == "true", name
    assert processor_shards("prod-redis-cluster") > 1


# ---------------------------------------------------------------------------------------
# Prometheus operator


def test_service_monitors_select_a_service_port_and_keep_the_services_labels() -> None:
    monitors = objects("prod", "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {
        "bricqs-ingest",
        "bricqs-ingest-sync",
        "bricqs-processor",
        "bricqs-processor-import",
        "bricqs-api",
        "bricqs-dispatcher",
    }
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        wanted = monitor["spec"]["selector"]["matchLabels"]
        services = [
            s
            for s in objects("prod", "Service")
            if all(s["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]
        assert len(services) == 1, monitor["metadata"]["name"]
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
            assert DURATION.match(endpoint["interval"])
            # `service` is a label of our request histogram and a target label of the
            # operator: only honorLabels keeps ours (tests/deploy/test_live_metrics checks
            # which labels collide).
            assert endpoint["honorLabels"] is True


def test_alerts_are_complete_and_parse_as_promql() -> None:
    alerts = alert_rules()
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names)), "alert names must be unique"
    anchors = readme_anchors()
    for rule in alerts:
        name = rule["alert"]
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert isinstance(rule["expr"], str), name
        promql_parser.parse(rule["expr"])  # raises on a syntax error
        if "for" in rule:
            assert DURATION.match(rule["for"]), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "deploy/README.md", name
        assert anchor in anchors, f"{name}: deploy/README.md has no section #{anchor}"


def test_alerts_cover_the_service_levels() -> None:
    text = "\n".join(rule["expr"] for rule in alert_rules())
    for needed in (
        "bricqs_http_request_duration_seconds_bucket",  # ingest p99
        'status=~"5.."',  # 5xx ratio
        "bricqs_processor_group_lag",  # consumer lag
        "bricqs_processor_end_to_end_lag_seconds_bucket",  # end-to-end lag
        "bricqs_processor_dead_lettered_total",  # DLQ growth
        'up{job="bricqs-processor"}',  # processor down
        "redis_memory_used_bytes",  # Redis memory
    ):
        assert needed in text, needed
    latency = next(r for r in alert_rules() if r["alert"] == "BricqsIngestLatencyP99High")
    assert ">= 0.05" in latency["expr"]
    # Every HTTP service: request latency, 5xx ratio, and no target up.
    for service in HTTP_SERVICES:
        exprs = [r["expr"] for r in alert_rules() if f'service="{service}"' in r["expr"]]
        assert any("bricqs_http_request_duration_seconds_bucket" in e for e in exprs), service
        assert any('status=~"5.."' in e for e in exprs), service
        assert f'up{{job="bricqs-{service}"}}' in text, service


def test_dashboard_shows_latency_and_errors_of_every_http_service() -> None:
    for service in HTTP_SERVICES:
        exprs = [e for e in dashboard_expressions() if f'service="{service}"' in e]
        assert any("histogram_quantile(0.99" in e for e in exprs), service
        assert any('status=~"5.."' in e for e in exprs), service
        assert any(f'up{{job="bricqs-{service}"}}' in e for e in dashboard_expressions()), service


def test_up_alerts_name_jobs_the_service_monitors_create() -> None:
    # The operator names a ServiceMonitor's job after the Service (no jobLabel here).
    jobs = set()
    for monitor in objects("prod", "ServiceMonitor"):
        assert "jobLabel" not in monitor["spec"]
        jobs.add(monitor["metadata"]["name"])
    exprs = [rule["expr"] for rule in alert_rules()] + dashboard_expressions()
    referenced = {job for expr in exprs for job in re.findall(r'up\{job="([^"]+)"', expr)}
    assert referenced, "no alert watches scrape targets"
    assert referenced <= jobs


# ---------------------------------------------------------------------------------------
# Grafana


def test_dashboard_is_a_grafana_dashboard_whose_queries_parse() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        titles.add(panel["title"])
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"] and target["expr"], panel["title"]
    for expr in dashboard_expressions():
        promql_parser.parse(expr)
    # What on-call looks at first.
    for wanted in (
        "Request rate by route and status",
        "Latency p99 by route",
        "Events: accepted / rejected / duplicate",
        "Consumer-group lag",
        "Pending entries",
        "Throughput by outcome",
        "Dead-lettered by reason",
        "Batch transaction latency",
    ):
        assert wanted in titles, wanted


def test_dashboard_ships_as_a_configmap_for_the_grafana_sidecar() -> None:
    (config,) = [
        cm
        for cm in objects("prod", "ConfigMap")
        if cm["metadata"]["name"] == "bricqs-grafana-dashboard"
    ]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(config["data"]["bricqs-dashboard.json"])
    assert shipped == json.loads(DASHBOARD.read_text(encoding="utf-8"))


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_plain_prometheus_finds_the_pods_by_annotation(overlay: str) -> None:
    for dep in objects(overlay, "Deployment"):
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        ports = {str(p["containerPort"]) for c in pod_spec(dep)["containers"] for p in c["ports"]}
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert annotations["prometheus.io/port"] in ports
