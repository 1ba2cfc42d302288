"""Settings of the dispatcher service, from environment variables (see bricqs.settings).

A claimed message is leased for `LEASE_SECONDS`: no other dispatcher takes it before the
lease ends, so the lease must exceed the longest attempt (`ATTEMPT_TIMEOUT_SECONDS`) plus
the time to record its result; start-up refuses a lease not at least twice the timeout.
A dispatcher killed mid-attempt leaves its messages to be taken again when their lease
ends: delivered at least once, with the same webhook-id.
"""

from __future__ import annotations

import logging
from typing import Annotated

import msgspec
from msgspec import Meta

from bricqs.settings import DatabaseTransactionPooling, DatabaseUrl, LogLevel, WebhooksAllowPrivate
from bricqs.webhook_secrets import WebhookSecretsKeys


class DispatcherSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the dispatcher can be told; each field is one environment variable."""

    database_url: DatabaseUrl = "postgresql://bricqs@127.0.0.1:5432/bricqs"
    database_transaction_pooling: DatabaseTransactionPooling = False
    database_pool_size: Annotated[
        int, Meta(ge=2, le=100, description="PostgreSQL connections of the process.")
    ] = 3
    attempt_timeout_seconds: Annotated[
        float,
        Meta(gt=0, le=300, description="Bound on one delivery attempt, connection included."),
    ] = 15.0
    lease_seconds: Annotated[
        float,
        Meta(gt=0, le=3_600, description="How long a claimed message is this dispatcher's."),
    ] = 60.0
    max_in_flight: Annotated[
        int, Meta(ge=1, le=10_000, description="Attempts in flight at once, all endpoints.")
    ] = 500
    max_in_flight_per_endpoint: Annotated[
        int,
        Meta(
            ge=1,
            le=1_000,
            description="Attempts in flight at once to one endpoint, all replicas together.",
        ),
    ] = 20
    poll_interval_ms: Annotated[
        int,
        Meta(ge=1, le=60_000, description="How often to look for due messages when idle."),
    ] = 500
    response_limit_bytes: Annotated[
        int, Meta(ge=0, le=1_048_576, description="Most bytes of a response body read.")
    ] = 4_096
    webhooks_allow_private: WebhooksAllowPrivate = False
    webhook_secrets_keys: WebhookSecretsKeys = ""
    dns_cache_seconds: Annotated[
        float,
        Meta(ge=0, le=3_600, description="How long an endpoint host's addresses are reused."),
    ] = 30.0
    delivered_retention_days: Annotated[
        int, Meta(ge=1, description="Delivered messages are purged after this many days.")
    ] = 7
    failed_retention_days: Annotated[
        int, Meta(ge=1, description="Failed messages are purged after this many days.")
    ] = 30
    metrics_host: Annotated[
        str, Meta(description="Address of the /metrics and /health server.")
    ] = "0.0.0.0"  # noqa: S104 - probes and scrapers reach the pod from outside
    metrics_port: Annotated[
        int, Meta(ge=0, le=65_535, description="Port of /metrics and /health; 0 disables.")
    ] = 9102
    log_level: LogLevel = "INFO"

    def __post_init__(self) -> None:
        if self.lease_seconds < 2 * self.attempt_timeout_seconds:
            raise ValueError(
                f"LEASE_SECONDS ({self.lease_seconds}) must be at least twice"
                f" ATTEMPT_TIMEOUT_SECONDS ({self.attempt_timeout_seconds})"
            )
        if self.max_in_flight_per_endpoint > self.max_in_flight:
            raise ValueError("MAX_IN_FLIGHT_PER_ENDPOINT must not exceed MAX_IN_FLIGHT")
        if not isinstance(logging.getLevelName(self.log_level), int):
            raise ValueError(f"LOG_LEVEL ({self.log_level!r}) is not a logging level")
