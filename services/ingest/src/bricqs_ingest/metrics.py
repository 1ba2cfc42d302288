"""The ingest service's own Prometheus series (the request histogram is shared, in
bricqs.web.metrics; the enqueue pipeline's are in publisher)."""

from __future__ import annotations

from prometheus_client import Counter

EVENTS = Counter(
    "bricqs_ingest_events_total",
    "Events by endpoint and outcome (accepted, rejected, duplicate, rate_limited).",
    ["endpoint", "outcome"],
)
# Every series at 0 from the start: rates and alerts see the first event, and a dashboard
# shows 0 rather than "no data" for an outcome that has not happened yet.
for _endpoint in ("single", "batch", "sync"):
    for _outcome in ("accepted", "rejected", "duplicate", "rate_limited"):
        EVENTS.labels(_endpoint, _outcome)

FAST_PATH = Counter(
    "bricqs_ingest_fast_path_total",
    "Single events answered by the raw ASGI fast path rather than the framework's route.",
)
