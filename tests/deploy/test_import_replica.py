"""Historical imports have their own processor Deployment in Kubernetes: bricqs-processor
reads the live streams only and bricqs-processor-import the historical ones, with the same
image and settings otherwise, so an import never shares a process with live traffic and
every stream has a reader (docs/import.md)."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from bricqs.settings import load_settings
from bricqs_processor.settings import ProcessorSettings
from tests.deploy.helpers import OVERLAYS, container_env, named, pod_spec, service_of


def processor_settings(overlay: str, deployment: str) -> ProcessorSettings:
    (container,) = pod_spec(named(overlay, "Deployment", deployment))["containers"]
    assert service_of(container) == "processor"  # one image, two roles
    return load_settings(ProcessorSettings, container_env(overlay, container).values)


@pytest.mark.parametrize("overlay", [*OVERLAYS, "prod-redis-cluster"])
def test_live_and_historical_streams_are_read_by_deployments_of_their_own(overlay: str) -> None:
    live = processor_settings(overlay, "bricqs-processor")
    history = processor_settings(overlay, "bricqs-processor-import")
    assert (live.reads_live(), live.reads_historical()) == (True, False)
    assert (history.reads_live(), history.reads_historical()) == (False, True)
    # Apart from which streams they read, they are the same processor.
    assert replace(live, processor_streams="both") == replace(history, processor_streams="both")
