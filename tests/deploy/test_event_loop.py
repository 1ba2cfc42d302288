"""Ingest and the api run on one named event loop everywhere: the images, `make run`, and
the bench, whose bare reference is served on the same loop as ingest."""

from __future__ import annotations

import importlib.util
import tomllib

import pytest

from bench.bare_asgi import LOOP
from bricqs_devstack import run
from tests.deploy.helpers import HTTP_SERVICES, ROOT, dockerfile_stages, option


@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_images_name_the_loop_the_bench_measures(service: str) -> None:
    entrypoint = dockerfile_stages()[service].entrypoint()
    assert option(entrypoint, "--loop") == LOOP


def test_make_run_serves_on_the_same_loop() -> None:
    assert run.EVENT_LOOP == LOOP


@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_the_loop_is_a_dependency_of_the_service_and_installed(service: str) -> None:
    project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    dependencies = project["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("[")[0] for d in dependencies}
    assert LOOP in names
    assert importlib.util.find_spec(LOOP) is not None
