"""Prometheus metrics of the dispatcher (prefix `bricqs_dispatcher_`); one process per
container, so the default registry is right."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

ATTEMPTS = Counter(
    "bricqs_dispatcher_attempts_total",
    "Delivery attempts by result: delivered, retry, failed.",
    ["result"],
)
ATTEMPT_SECONDS = Histogram(
    "bricqs_dispatcher_attempt_seconds",
    "Time of one delivery attempt, from connection to the response's end.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
ROUND_RECORDS = Histogram(
    "bricqs_dispatcher_round_records",
    "Attempt results recorded by one round (each round is one commit).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
IN_FLIGHT = Gauge("bricqs_dispatcher_in_flight", "Attempts in flight.")
ENDPOINTS_DISABLED = Counter(
    "bricqs_dispatcher_endpoints_disabled_total", "Endpoints disabled after a 410 Gone."
)
ROUND_ERRORS = Counter(
    "bricqs_dispatcher_round_errors_total", "Claim or record rounds that failed (retried)."
)
SWEPT = Counter(
    "bricqs_dispatcher_swept_total",
    "Messages no claim would take: deleted (endpoint gone) or failed (endpoint disabled).",
    ["action"],
)
DUE = Gauge("bricqs_dispatcher_due_messages", "Messages due to enabled endpoints, unclaimed.")
OLDEST_DUE_SECONDS = Gauge(
    "bricqs_dispatcher_oldest_due_seconds",
    "How long the oldest unclaimed due message has waited past its attempt time.",
)
DISABLED_ENDPOINTS = Gauge(
    "bricqs_dispatcher_disabled_endpoints", "Endpoints disabled (by a 410 or by hand)."
)
SECRETS_RESEALED = Counter(
    "bricqs_dispatcher_secrets_resealed_total",
    "Endpoints whose secrets were encrypted under the first WEBHOOK_SECRETS_KEYS key.",
)
PURGED = Counter("bricqs_dispatcher_purged_total", "Finished messages purged by retention.")

# Every labelled series exists at 0 from the start, so rate() and increase() see the first.
for _result in ("delivered", "retry", "failed"):
    ATTEMPTS.labels(_result)
for _action in ("deleted", "failed"):
    SWEPT.labels(_action)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
