"""Settings of the ingest service, from environment variables (see bricqs.settings)."""

from __future__ import annotations

from datetime import datetime, timedelta
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
    StreamShardsPrevious,
)


class IngestSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the ingest service can be told; each field is one environment variable."""

    ingest_endpoints: Annotated[
        str,
        Meta(
            pattern=r"^(all|async|sync)$",
            description="Which Events API endpoints this process serves: all, async (single"
            " and batch) or sync. Sync events run the mechanics in the worker; served"
            " apart (their own pods, routed by path) they never delay the async ones.",
        ),
    ] = "all"
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    redis_cluster: RedisClusterMode = False
    database_url: DatabaseUrl = "postgresql://bricqs@127.0.0.1:5432/bricqs"
    database_transaction_pooling: DatabaseTransactionPooling = False
    stream_shards: StreamShards = 1
    stream_shards_previous: StreamShardsPrevious = 0
    redis_timeout_ms: Annotated[
        int, Meta(gt=0, le=60_000, description="Bound on one Redis round trip; past it: 503.")
    ] = 500
    database_timeout_ms: Annotated[
        int, Meta(gt=0, le=60_000, description="Bound on the sync endpoint's database work.")
    ] = 5_000
    retry_after_seconds: RetryAfterSeconds = 1
    auth_cache_ttl_seconds: AuthCacheTtlSeconds = 30.0
    participant_token_secret: ParticipantTokenSecret = ""
    auth_negative_ttl_seconds: Annotated[
        float, Meta(gt=0, description="How long an unknown key is remembered as unknown.")
    ] = 5.0
    idempotency_ttl_seconds: Annotated[
        int, Meta(ge=60, description="How long Redis remembers an idempotency key (24 h).")
    ] = 86_400
    idempotency_retention_days: Annotated[
        int, Meta(ge=1, description="How long PostgreSQL enforces an idempotency key.")
    ] = 30
    idempotency_lookup_timeout_ms: Annotated[
        int,
        Meta(
            gt=0,
            le=60_000,
            description="Bound on the PostgreSQL check of a keyed event older than Redis'"
            " memory of keys; past it the event is queued unchecked.",
        ),
    ] = 200
    database_pool_size: Annotated[
        int, Meta(ge=1, le=100, description="PostgreSQL connections per worker process.")
    ] = 10
    max_inflight_pipelines: Annotated[
        int,
        Meta(
            ge=1,
            le=64,
            description="Concurrent Redis pipelines per worker; more requests wait"
            " and are coalesced into the next pipeline.",
        ),
    ] = 4
    rules_refresh_seconds: RulesRefreshSeconds = 2.0
    rate_limit_per_second: Annotated[
        float,
        Meta(
            ge=0,
            description="Default events per second per API key (0: no limit); a"
            " project may have its own (bricqs-admin project limits).",
        ),
    ] = 0.0
    rate_limit_burst: Annotated[
        int,
        Meta(
            ge=100,
            description="Default bucket size per API key: how many events may come"
            " at once (at least one full batch).",
        ),
    ] = 2000
    max_backlog: Annotated[
        int,
        Meta(
            ge=0,
            description="Unprocessed events (consumer-group lag plus pending) past"
            " which ingest answers 503 ingest_backpressure (0: never).",
        ),
    ] = 1_000_000
    historical_max_backlog: Annotated[
        int,
        Meta(
            ge=0,
            description="Unprocessed events of historical imports past which historical"
            " batches are answered 503 ingest_backpressure (0: never); live events are"
            " never refused for them (docs/import.md).",
        ),
    ] = 1_000_000
    historical_rate_per_second: Annotated[
        float,
        Meta(
            ge=0,
            description="Historical events per second one API key may send (0: no pace):"
            " a faster import batch is held until its turn (up to 2 s, then 429"
            " rate_limited), so an importer sending as fast as it can does not take the"
            " machine from live traffic (docs/import.md).",
        ),
    ] = 1_000.0
    backlog_check_ms: Annotated[
        int, Meta(ge=50, description="How often each worker measures the backlog.")
    ] = 500
    live_max_event_age_hours: Annotated[
        int,
        Meta(
            ge=0,
            description="Oldest timestamp a live event may carry, in hours before now (0:"
            " any past time); older events are refused (422 too_old) unless sent as a"
            " historical import (docs/import.md).",
        ),
    ] = 0
    historical_max_event_age_days: Annotated[
        int,
        Meta(
            ge=1,
            le=36_500,
            description="Oldest timestamp an event of a historical import may carry, in"
            " days before now (docs/import.md).",
        ),
    ] = 3_650
    log_level: LogLevel = "INFO"

    def oldest_timestamp(self, now: datetime, *, historical: bool) -> datetime | None:
        """The earliest event timestamp accepted at `now` (None: any past time)."""
        if historical:
            return now - timedelta(days=self.historical_max_event_age_days)
        if self.live_max_event_age_hours:
            return now - timedelta(hours=self.live_max_event_age_hours)
        return None
