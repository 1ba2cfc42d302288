"""The kustomize overlays render, validate against the Kubernetes schemas, and agree with
the code: settings names, ports, probes, images, grace periods, companions, policies."""

from __future__ import annotations

import inspect
import re
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest
import yaml

from bricqs.settings import load_settings
from bricqs.web import probes
from bricqs.web.health import health_router
from bricqs_processor import lifecycle as processor_lifecycle
from tests.deploy.helpers import (
    DEPLOY,
    HTTP_SERVICES,
    OVERLAYS,
    READY_CHECKS,
    ROOT,
    Obj,
    container_env,
    dockerfile_stages,
    is_ours,
    named,
    objects,
    option,
    pod_spec,
    render,
    service_of,
    settings_class,
    settings_names,
    tool,
    workloads,
)

# The oldest Kubernetes the manifests need (preStop `sleep` is 1.30+) and the newest schema
# set kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
# Kinds with no schema in kubernetes-validate: checked by test_custom_resources instead.
CUSTOM_RESOURCES = {
    ("ScaledObject", "keda.sh/v1alpha1"),
    ("TriggerAuthentication", "keda.sh/v1alpha1"),
    ("ServiceMonitor", "monitoring.coreos.com/v1"),
    ("PodMonitor", "monitoring.coreos.com/v1"),
    ("PrometheusRule", "monitoring.coreos.com/v1"),
}
# bricqs-admin reads these (DATABASE_URL always, REDIS_URL for the DLQ commands).
ADMIN_ENV = {"DATABASE_URL", "DATABASE_DIRECT_URL", "REDIS_URL"}
# Secrets prod expects to exist in the namespace: (secret, key) pairs, all in the README.
PROD_EXTERNAL_SECRETS = {
    ("bricqs-connections", "REDIS_URL"),
    ("bricqs-connections", "DATABASE_URL"),
    ("bricqs-connections", "DATABASE_DIRECT_URL"),  # optional: the migration behind PgBouncer
    ("bricqs-keda-redis", "address"),
    ("bricqs-keda-redis", "password"),
    ("bricqs-webhook-secrets", "WEBHOOK_SECRETS_KEYS"),
}


def ours(overlay: str) -> list[tuple[Obj, Obj]]:
    """(workload, container) for every container that runs one of our images."""
    return [(w, c) for w in workloads(overlay) for c in pod_spec(w)["containers"] if is_ours(c)]


def deployment(overlay: str, service: str) -> tuple[Obj, Obj]:
    """The Deployment of a service and its container."""
    found = [
        (w, c)
        for w, c in ours(overlay)
        if w["kind"] == "Deployment"
        and w["metadata"]["name"] == f"bricqs-{service}"
        and "command" not in c
    ]
    assert len(found) == 1, f"{overlay}: expected one Deployment running {service}"
    return found[0]


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels / matchExpressions) selects `labels`."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if (op == "In" and labels.get(key) not in values) or (
            op == "NotIn" and labels.get(key) in values
        ):
            return False
        if (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def container_port(container: Obj, port: int | str) -> int:
    """A container port given by number or by name (fails if the name is unknown)."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    pytest.fail(f"container {container['name']} has no port named {port}")


def setting(env: dict[str, str], service: str, name: str) -> int:
    """A numeric setting as the container gets it: from its env, else the default."""
    if name.upper() in env:
        return int(env[name.upper()])
    return int(getattr(settings_class(service)(), name))


# ---------------------------------------------------------------------------------------
# Rendering and schemas


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_builtin_object_validates_strictly(
    overlay: str, tmp_path: Path
) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(render(overlay)))
    versions = [arg for v in K8S_VERSIONS for arg in ("-k", v)]
    validate = tool("kubernetes-validate", "kubernetes-validate")
    result = subprocess.run(
        [validate, "--strict", "--quiet", *versions, str(rendered)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    without_schema = set(
        re.findall(r"kind (\S+) with api version (\S+) for", result.stdout + result.stderr)
    )
    assert without_schema <= CUSTOM_RESOURCES, f"kinds nobody validates: {without_schema}"
    kinds = {o["kind"] for o in render(overlay)}
    assert {"Deployment", "Service", "ServiceAccount", "ConfigMap", "Job"} <= kinds
    assert {"PodDisruptionBudget", "NetworkPolicy"} <= kinds


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    # The check above is only worth something if a typo fails it.
    broken = [dict(o) for o in render("dev")]
    dep = next(o for o in broken if o["kind"] == "Deployment")
    dep["spec"] = {**dep["spec"], "replica": 2}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(broken))
    result = subprocess.run(
        [tool("kubernetes-validate", "kubernetes-validate"), "--strict", "--quiet", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "replica" in result.stdout


# ---------------------------------------------------------------------------------------
# Pods


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_non_root_read_only_without_capabilities(overlay: str) -> None:
    for workload in workloads(overlay):
        spec = pod_spec(workload)
        where = f"{overlay} {workload['kind']}/{workload['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] > 0, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["enableServiceLinks"] is False, where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), where
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, where
            if is_ours(container):
                # Python and its libraries may need a scratch folder; the root is read-only.
                tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert tmp, f"{where}: no writable /tmp"
                assert "emptyDir" in volumes[tmp[0]["name"]], where


@pytest.mark.parametrize("service", [*HTTP_SERVICES, "processor", "dispatcher"])
def test_probes_use_the_health_endpoints_on_a_declared_port(service: str) -> None:
    _, container = deployment("prod", service)
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    readiness = container["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/health/ready"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        container_port(container, container[probe]["httpGet"]["port"])
    # Readiness runs its checks one after the other, each bounded: the probe must outwait
    # them all (tests/deploy/test_live_services checks which checks each service runs).
    if service in HTTP_SERVICES:
        per_check = inspect.signature(health_router).parameters["timeout"].default
    else:  # the processor and the dispatcher serve bricqs.web.probes
        per_check = probes.CHECK_TIMEOUT
    assert readiness["timeoutSeconds"] > len(READY_CHECKS[service]) * per_check


def test_ports_are_the_ones_the_services_listen_on() -> None:
    stages = dockerfile_stages()
    for service in HTTP_SERVICES:
        _, container = deployment("prod", service)
        port = int(option(stages[service].entrypoint(), "--port"))
        assert container_port(container, "http") == port, service
        assert stages[service].all("EXPOSE") == [str(port)], service

    for service in ("processor", "dispatcher"):
        _, container = deployment("prod", service)
        env = container_env("prod", container).values
        metrics_port = setting(env, service, "metrics_port")
        assert container_port(container, "metrics") == metrics_port, service
        assert stages[service].all("EXPOSE") == [str(metrics_port)], service

    for overlay in OVERLAYS:
        for svc in objects(overlay, "Service"):
            pods = [
                c
                for w in workloads(overlay)
                if selects(svc["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
                for c in pod_spec(w)["containers"]
            ]
            assert pods, f"{overlay}: Service {svc['metadata']['name']} selects no pod"
            for port in svc["spec"]["ports"]:
                target = port["targetPort"]
                assert any(
                    target in {p.get("name"), p["containerPort"]}
                    for c in pods
                    for p in c.get("ports", [])
                ), f"{overlay}: Service {svc['metadata']['name']} targets unknown port {target}"


# ---------------------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_env_name_is_a_setting_the_service_reads(overlay: str) -> None:
    for workload, container in ours(overlay):
        env = container_env(overlay, container)
        where = f"{overlay} {workload['metadata']['name']}"
        if "command" in container:  # the migration Job runs bricqs-admin
            assert env.names() <= ADMIN_ENV, where
            continue
        service = service_of(container)
        unknown = env.names() - settings_names(service)
        assert not unknown, f"{where}: {sorted(unknown)} are not settings of {service}"
        # The connection URLs the service reads come from the Secret (the dispatcher has
        # no Redis).
        urls = {"REDIS_URL", "DATABASE_URL"} & settings_names(service)
        assert "DATABASE_URL" in urls and urls <= set(env.secrets), where
        # The values load: types, bounds and cross-checks such as CLAIM_MIN_IDLE_MS.
        loaded = load_settings(
            settings_class(service),
            {**env.values, "REDIS_URL": "redis://r:6379/0", "DATABASE_URL": "postgresql://d/b"},
        )
        for name, value in env.values.items():
            actual = getattr(loaded, name.lower())
            assert actual == msgspec.convert(value, type(actual), strict=False), f"{where}: {name}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_that_must_agree_come_from_one_shared_configmap(overlay: str) -> None:
    shared = named(
        overlay,
        "ConfigMap",
        next(
            cm["metadata"]["name"]
            for cm in objects(overlay, "ConfigMap")
            if cm["metadata"]["name"].startswith("bricqs-shared")
        ),
    )
    # Event placement (STREAM_SHARDS) and idempotency retention are one decision for all.
    assert {"STREAM_SHARDS", "IDEMPOTENCY_RETENTION_DAYS"} <= set(shared["data"])
    name = shared["metadata"]["name"]
    readers = set()
    for workload, container in ours(overlay):
        if "command" in container:
            continue
        env = container_env(overlay, container)
        where = workload["metadata"]["name"]
        reads = set(shared["data"]) & settings_names(service_of(container))
        if name in env.configmaps:  # loaded whole: the service reads every key
            assert set(shared["data"]) <= settings_names(service_of(container)), where
        else:  # the keys it reads, one by one, from the shared ConfigMap
            taken = {k for k, (cm, _) in env.configmap_keys.items() if cm == name}
            assert taken == reads, where
        for key in reads:
            assert env.values[key] == shared["data"][key], f"{where}: {key} overridden"
            if key in ("STREAM_SHARDS", "IDEMPOTENCY_RETENTION_DAYS"):
                readers.add(service_of(container))
    # The api reads STREAM_SHARDS too: the console sums every shard's backlog.
    assert readers == {"ingest", "processor", "api"}


def test_dev_secret_points_at_the_dev_servers() -> None:
    secrets = {s["metadata"]["name"]: s for s in objects("dev", "Secret")}
    for workload, container in ours("dev"):
        for name, (secret, key) in container_env("dev", container).secrets.items():
            assert secret in secrets, f"{workload['metadata']['name']}: no Secret {secret}"
            assert key in secrets[secret]["data"], f"{name}: {secret} has no {key}"
    connections = next(s for n, s in secrets.items() if n.startswith("bricqs-connections"))
    postgres_env = next(s for n, s in secrets.items() if n.startswith("bricqs-postgres"))

    def value(secret: Obj, key: str) -> str:
        import base64

        return base64.b64decode(secret["data"][key]).decode()

    redis = urlsplit(value(connections, "REDIS_URL"))
    named("dev", "Service", str(redis.hostname))
    assert redis.port == 6379
    database = urlsplit(value(connections, "DATABASE_URL"))
    named("dev", "Service", str(database.hostname))
    assert database.username == value(postgres_env, "POSTGRES_USER")
    assert database.password == value(postgres_env, "POSTGRES_PASSWORD")
    assert database.path.lstrip("/") == value(postgres_env, "POSTGRES_DB")


def test_prod_ships_no_secret_and_documents_the_ones_it_needs() -> None:
    assert objects("prod", "Secret") == []
    used = {ref for _, c in ours("prod") for ref in container_env("prod", c).secrets.values()}
    for auth in objects("prod", "TriggerAuthentication"):
        used |= {(r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert used == PROD_EXTERNAL_SECRETS
    readme = (DEPLOY / "README.md").read_text()
    for secret, key in used:
        assert secret in readme and key in readme, f"deploy/README.md must say {secret}/{key}"


# ---------------------------------------------------------------------------------------
# Images and the Dockerfile


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_dockerfile_targets_and_deployments_keep_their_entrypoint(
    overlay: str,
) -> None:
    stages = dockerfile_stages()
    for workload, container in ours(overlay):
        service = service_of(container)
        assert service in stages, f"no Dockerfile target {service}"
        stages[service].entrypoint()
        tag = str(container["image"]).rsplit(":", 1)[-1]
        assert ":" in str(container["image"]) and tag != "latest", container["image"]
        if workload["kind"] == "Deployment":
            assert "command" not in container and "args" not in container
    images = {str(c["image"]) for _, c in ours(overlay)}
    if overlay == "dev":
        assert images == {
            "bricqs-ingest:dev",
            "bricqs-processor:dev",
            "bricqs-api:dev",
            "bricqs-dispatcher:dev",
        }
    else:
        assert all("/" in image for image in images), images


def test_migration_job_runs_the_admin_migrate_command() -> None:
    job = named("prod", "Job", "bricqs-migrate")
    (container,) = pod_spec(job)["containers"]
    command = container["command"]
    assert command[0] == "/app/.venv/bin/bricqs-admin"
    assert command[-1] == "migrate"
    # Behind PgBouncer the migration needs the primary's own address: an optional key.
    direct = {e["name"]: e for e in container["env"]}["DATABASE_DIRECT_URL"]
    assert direct["valueFrom"]["secretKeyRef"] == {
        "name": "bricqs-connections",
        "key": "DATABASE_DIRECT_URL",
        "optional": True,
    }
    scripts = tomllib.loads((ROOT / "libs/bricqs/pyproject.toml").read_text())["project"]
    assert "bricqs-admin" in scripts["scripts"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["ttlSecondsAfterFinished"] > 0


# ---------------------------------------------------------------------------------------
# Shutdown


@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_http_service_grace_period_covers_pre_stop_and_granian_drain(service: str) -> None:
    workload, container = deployment("prod", service)
    grace = pod_spec(workload)["terminationGracePeriodSeconds"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    kill_timeout = int(option(dockerfile_stages()[service].entrypoint(), "--workers-kill-timeout"))
    assert grace > pre_stop + kill_timeout


def test_processor_grace_period_covers_the_longest_batch() -> None:
    workload, container = deployment("prod", "processor")
    grace_ms = pod_spec(workload)["terminationGracePeriodSeconds"] * 1000
    env = container_env("prod", container).values

    def ms(name: str) -> int:
        return setting(env, "processor", name)

    # A read in flight, a pooled connection, one batch transaction, then the last acks.
    worst = (
        ms("block_ms")
        + ms("database_timeout_ms")
        + ms("batch_timeout_ms")
        + processor_lifecycle.SHUTDOWN_ATTEMPTS * (ms("redis_timeout_ms") + ms("block_ms"))
    )
    assert grace_ms > worst, f"grace {grace_ms} ms does not cover {worst} ms"


# ---------------------------------------------------------------------------------------
# Companions, policies, scaling


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_its_account_service_budget_and_policy(overlay: str) -> None:
    accounts = {a["metadata"]["name"] for a in objects(overlay, "ServiceAccount")}
    for dep in objects(overlay, "Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        name = dep["metadata"]["name"]
        assert pod_spec(dep)["serviceAccountName"] in accounts, name
        for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
            selector = "selector" if kind != "NetworkPolicy" else "podSelector"
            matching = [
                o
                for o in objects(overlay, kind)
                if selects(
                    o["spec"][selector]
                    if kind != "Service"
                    else {"matchLabels": o["spec"]["selector"]},
                    labels,
                )
            ]
            assert matching, f"{overlay}: {name} has no {kind}"
        budget = next(
            p for p in objects(overlay, "PodDisruptionBudget") if p["metadata"]["name"] == name
        )
        # maxUnavailable never blocks a drain, whatever the replica count.
        assert budget["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_only_the_flows_the_architecture_needs(overlay: str) -> None:
    policies = objects(overlay, "NetworkPolicy")
    allowed_egress = {
        "bricqs-ingest": {53, 6379, 5432},
        "bricqs-ingest-sync": {53, 6379, 5432},
        "bricqs-processor": {53, 6379, 5432},
        "bricqs-processor-import": {53, 6379, 5432},
        "bricqs-api": {53, 6379, 5432},
        # The customers' webhook endpoints, outside the cluster's private ranges.
        "bricqs-dispatcher": {53, 5432, 443, 80},
        "bricqs-migrate": {53, 5432},
        "bricqs-redis": set(),
        "bricqs-postgres": set(),
    }
    for workload in workloads(overlay):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        name = workload["metadata"]["name"]
        mine = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
        assert mine, f"{overlay}: {name} is selected by no NetworkPolicy"
        for policy in mine:
            assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            egress_ports = {
                p["port"] for rule in policy["spec"].get("egress", []) for p in rule["ports"]
            }
            assert egress_ports <= allowed_egress[name], f"{name}: egress {egress_ports}"
            containers = pod_spec(workload)["containers"]
            for rule in policy["spec"].get("ingress", []):
                for port in rule["ports"]:
                    assert any(
                        port["port"] in {p.get("name"), p["containerPort"]}
                        for c in containers
                        for p in c.get("ports", [])
                    ), f"{name}: ingress on unknown port {port['port']}"
    if overlay == "dev":
        for server, port, clients in (
            (
                "bricqs-redis",
                "redis",
                {
                    "bricqs-ingest",
                    "bricqs-ingest-sync",
                    "bricqs-processor",
                    "bricqs-processor-import",
                    "bricqs-api",
                },
            ),
            (
                "bricqs-postgres",
                "postgres",
                {
                    "bricqs-ingest",
                    "bricqs-ingest-sync",
                    "bricqs-processor",
                    "bricqs-processor-import",
                    "bricqs-api",
                    "bricqs-dispatcher",
                    "bricqs-migrate",
                },
            ),
        ):
            policy = named("dev", "NetworkPolicy", server)
            rules = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == port]
            (rule,) = rules
            peers = {
                value
                for peer in rule["from"]
                for expr in peer["podSelector"]["matchExpressions"]
                for value in expr["values"]
            }
            assert peers == clients, f"{server} is reachable from {peers}"


def test_dev_runs_single_replica_redis_with_aof_and_postgres() -> None:
    redis = named("dev", "StatefulSet", "bricqs-redis")
    postgres = named("dev", "StatefulSet", "bricqs-postgres")
    assert redis["spec"]["replicas"] == postgres["spec"]["replicas"] == 1
    command = " ".join(pod_spec(redis)["containers"][0]["command"])
    assert "--appendonly yes" in command
    # Full Redis must refuse writes, never evict stream entries or idempotency keys.
    assert "--maxmemory-policy noeviction" in command
    for server in (redis, postgres):
        assert server["spec"]["volumeClaimTemplates"], server["metadata"]["name"]
    for dep in objects("dev", "Deployment"):
        assert dep["spec"]["replicas"] == 1


def test_prod_autoscalers_own_the_replica_counts() -> None:
    hpas = objects("prod", "HorizontalPodAutoscaler")
    # The HTTP services scale on CPU; the processor on consumer-group lag (KEDA).
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == {
        f"bricqs-{service}" for service in (*HTTP_SERVICES, "ingest-sync")
    }
    for hpa in hpas:
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        _, container = deployment("prod", target["name"].removeprefix("bricqs-"))
        assert "cpu" in container["resources"]["requests"]  # utilisation is relative to it
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in hpas} | {
        s["spec"]["scaleTargetRef"]["name"] for s in objects("prod", "ScaledObject")
    }
    assert scaled == {"bricqs-ingest", "bricqs-ingest-sync", "bricqs-processor", "bricqs-api"}
    for name in scaled:
        assert "replicas" not in named("prod", "Deployment", name)["spec"], name


def test_prod_spreads_each_deployment_over_zones_and_nodes() -> None:
    for dep in objects("prod", "Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        constraints = pod_spec(dep)["topologySpreadConstraints"]
        keys = {c["topologyKey"] for c in constraints}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for constraint in constraints:
            assert selects(constraint["labelSelector"], labels), dep["metadata"]["name"]
