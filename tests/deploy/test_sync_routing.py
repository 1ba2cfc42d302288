"""Sync events have their own Deployment in Kubernetes: the Ingress routes their path to
bricqs-ingest-sync (the ingest image serving sync alone), and bricqs-ingest, which serves
the async endpoints, does not serve them, so their mechanics work never shares its loop."""

from __future__ import annotations

import pytest

from bricqs.settings import load_settings
from bricqs_ingest.settings import IngestSettings
from tests.deploy.helpers import OVERLAYS, container_env, named, objects, pod_spec, service_of


def endpoints_of(overlay: str, deployment: str) -> str:
    (container,) = pod_spec(named(overlay, "Deployment", deployment))["containers"]
    assert service_of(container) == "ingest"  # one image, two roles
    values = container_env(overlay, container).values
    return load_settings(IngestSettings, values).ingest_endpoints


def backend(overlay: str, path: str) -> tuple[str, str]:
    """(Service, pathType) the Ingress sends `path` to, as a controller picks: an Exact
    match first, then the longest Prefix."""
    rules = [
        (p["path"], p["pathType"], p["backend"]["service"]["name"])
        for ingress in objects(overlay, "Ingress")
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    ]
    exact = [(s, t) for p, t, s in rules if t == "Exact" and p == path]
    prefixed = sorted(
        ((len(p), s, t) for p, t, s in rules if t == "Prefix" and path.startswith(p)),
        reverse=True,
    )
    return exact[0] if exact else (prefixed[0][1], prefixed[0][2])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sync_events_are_served_and_routed_apart_from_the_async_endpoints(overlay: str) -> None:
    assert endpoints_of(overlay, "bricqs-ingest") == "async"
    assert endpoints_of(overlay, "bricqs-ingest-sync") == "sync"
    assert backend(overlay, "/api/v1/ingest/events/sync") == ("bricqs-ingest-sync", "Exact")
    assert backend(overlay, "/api/v1/ingest/events")[0] == "bricqs-ingest"
    assert backend(overlay, "/api/v1/ingest/events/batch")[0] == "bricqs-ingest"
    assert backend(overlay, "/api/v1/gamify/participants/u/state")[0] == "bricqs-api"
    # Only the APIs go out: metrics and health stay inside the cluster.
    paths = {
        p["path"]
        for ingress in objects(overlay, "Ingress")
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert all(p.startswith("/api/v1") for p in paths)
