"""Settings of the api service, from environment variables (see bricqs.settings)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from bricqs.settings import (
    AuthCacheTtlSeconds,
    DatabaseTransactionPooling,
    DatabaseUrl,
    LogLevel,
    ParticipantTokenSecret,
    RedisClusterMode,
    RedisUrl,
    RetryAfterSeconds,
    RulesRefreshSeconds,
    StreamShards,
    WebhooksAllowPrivate,
)
from bricqs.webhook_secrets import WebhookSecretsKeys


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the api service can be told; each field is one environment variable."""

    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    redis_cluster: RedisClusterMode = False
    database_url: DatabaseUrl = "postgresql://bricqs@127.0.0.1:5432/bricqs"
    database_read_url: Annotated[
        str,
        Meta(
            description="PostgreSQL URL of a streaming standby for the api's reads (participant"
            " state, leaderboards, catalog, facts); empty: every read goes to DATABASE_URL."
        ),
    ] = ""
    database_transaction_pooling: DatabaseTransactionPooling = False
    database_timeout_ms: Annotated[
        int, Meta(gt=0, le=60_000, description="Bound on one request's database work.")
    ] = 5_000
    database_pool_size: Annotated[
        int, Meta(ge=1, le=100, description="PostgreSQL connections per worker process.")
    ] = 10
    retry_after_seconds: RetryAfterSeconds = 1
    auth_cache_ttl_seconds: AuthCacheTtlSeconds = 30.0
    participant_token_secret: ParticipantTokenSecret = ""
    rules_refresh_seconds: RulesRefreshSeconds = 2.0
    webhooks_allow_private: WebhooksAllowPrivate = False
    webhook_secrets_keys: WebhookSecretsKeys = ""
    stream_shards: StreamShards = 1
    console_session_secret: Annotated[
        str,
        Meta(
            description="Signs the web console's session and CSRF cookies; empty turns the"
            " console (/console) off; changing it signs everyone out."
        ),
    ] = ""
    console_session_hours: Annotated[
        float, Meta(gt=0, le=720, description="How long a console sign-in lasts.")
    ] = 8.0
    console_cookie_secure: Annotated[
        bool,
        Meta(description="Mark console cookies Secure (sent over HTTPS only, and localhost)."),
    ] = True
    log_level: LogLevel = "INFO"
