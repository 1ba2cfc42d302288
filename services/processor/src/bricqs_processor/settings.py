"""Settings of the processor service, from environment variables (see bricqs.settings).

Choosing `CLAIM_MIN_IDLE_MS`: an entry is reclaimed from a consumer once it has been
pending that long, so it must exceed the longest time a live consumer can hold a batch,
or two consumers process one entry at the same time (harmless for correctness, since
every write is idempotent, but wasted work and a spurious delivery count). That time is
bounded twice: `BATCH_TIMEOUT_MS` bounds one batch transaction in the processor (on
expiry the query is cancelled in the server and the transaction rolled back), and
`STATEMENT_TIMEOUT_MS` bounds how long the server may go on with a statement whose
client is gone. So the minimum idle time must exceed their sum (SPEC §9); start-up
refuses a smaller value. The defaults give 30 s against 10 s + 5 s; a normal batch of
500 events commits in tens of milliseconds. A consumer that holds a batch longer (many
transactions while bisecting around a poison event, or retries while PostgreSQL is
down) re-claims its entries every third of the minimum idle time, which resets their
idle time without counting a delivery, so a long outage neither hands them to another
consumer nor pushes them towards the dead-letter stream.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from bricqs.settings import (
    DatabaseTransactionPooling,
    DatabaseUrl,
    LogLevel,
    RedisClusterMode,
    RedisUrl,
    RulesRefreshSeconds,
    StreamShards,
    StreamShardsPrevious,
)

Milliseconds = Annotated[int, Meta(gt=0, le=86_400_000)]


class ProcessorSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the processor can be told; each field is one environment variable."""

    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    redis_cluster: RedisClusterMode = False
    database_url: DatabaseUrl = "postgresql://bricqs@127.0.0.1:5432/bricqs"
    database_transaction_pooling: DatabaseTransactionPooling = False
    stream_shards: StreamShards = 1
    stream_shards_previous: StreamShardsPrevious = 0
    batch_size: Annotated[
        int,
        Meta(
            ge=1,
            le=10_000,
            description="Most entries in hand over all shards: each shard's reader holds"
            " its share, read half at a time (the next half read while the first is stored);"
            " stored as concurrent transactions split by participant (at most"
            " DATABASE_POOL_SIZE - 1 at once, at least 250 entries each).",
        ),
        # 8,000: reads of 4,000, not 2,000: fewer, larger statements per event, so one
        # replica drains more with the benchmark's 20 rules and its end-to-end lag under
        # load is shorter (measured in the commit that set it, and by `make bench`).
        # Reads only fill when a backlog waits, so quiet traffic is not delayed; reads of
        # 8,000 gained little more for transactions twice as long. Two reads in hand, not
        # one of 8,000: the second is read and queued while the first is stored (+3%).
    ] = 8_000
    block_ms: Annotated[
        int,
        Meta(
            ge=1,
            le=60_000,
            description="How long one XREADGROUP waits for new entries; also bounds how"
            " long SIGTERM waits for a read in flight.",
        ),
    ] = 1_000
    historical_batch_size: Annotated[
        int,
        Meta(
            ge=1,
            le=10_000,
            description="Most entries of a shard's historical stream (imports) read and"
            " stored at once, while its live reader has room: small, so each import"
            " transaction holds a CPU only briefly (docs/import.md).",
        ),
    ] = 10
    processor_streams: Annotated[
        Literal["both", "live", "historical"],
        Meta(
            description="Which of each shard's streams this replica reads: both (one"
            " process serves live traffic and imports), live, or historical (a replica"
            " of its own for imports, so they never share a process with live traffic;"
            " docs/import.md).",
        ),
    ] = "both"
    processor_nice: Annotated[
        int,
        Meta(
            ge=0,
            le=19,
            description="Lower this process's CPU priority by this much (Unix nice) at"
            " start: for an import replica sharing a machine's CPUs with live replicas"
            " (make run gives it 10); in Kubernetes, CPU requests weigh pods instead.",
        ),
    ] = 0
    historical_rest_ratio: Annotated[
        float,
        Meta(
            ge=0,
            le=100,
            description="After each historical batch the import reader rests this many"
            " times as long as the batch took: 1 gives imports at most half of the"
            " replica's time, 0 lets them take all that live traffic leaves.",
        ),
    ] = 1.0
    historical_poll_ms: Annotated[
        Milliseconds,
        Meta(
            description="How often a shard's reader looks at its historical stream while"
            " that stream was last found empty.",
        ),
    ] = 1_000
    claim_min_idle_ms: Annotated[
        Milliseconds,
        Meta(
            description="Idle time after which another consumer's pending entry is"
            " reclaimed; must exceed BATCH_TIMEOUT_MS + STATEMENT_TIMEOUT_MS.",
        ),
    ] = 30_000
    reclaim_interval_ms: Annotated[
        Milliseconds, Meta(description="How often the consumer looks for stuck entries.")
    ] = 5_000
    consumer_retention_ms: Annotated[
        int,
        Meta(
            ge=600_000,
            le=30 * 86_400_000,
            description="A consumer with nothing pending and idle this long (a process"
            " long gone) is removed from the group.",
        ),
    ] = 3_600_000
    max_deliveries: Annotated[
        int,
        Meta(
            ge=1,
            le=1_000,
            description="An entry delivered more often than this goes to the dead-letter stream.",
        ),
    ] = 5
    batch_timeout_ms: Annotated[
        Milliseconds,
        Meta(
            description="Bound on one batch transaction; past it the batch is cancelled,"
            " split in halves and retried (a single event is retried, never dead-lettered).",
        ),
    ] = 10_000
    statement_timeout_ms: Annotated[
        Milliseconds,
        Meta(
            description="PostgreSQL statement_timeout of the processor's sessions (behind a"
            " transaction pooler, set the role's statement_timeout to this value)."
        ),
    ] = 5_000
    database_timeout_ms: Annotated[
        Milliseconds,
        Meta(description="How long to wait for a pooled PostgreSQL connection before retrying."),
    ] = 5_000
    database_pool_size: Annotated[
        int,
        Meta(
            ge=2,
            le=100,
            description="PostgreSQL connections of the process: up to this less one store a"
            " batch at once, one is left for housekeeping and health checks.",
        ),
    ] = 4
    redis_timeout_ms: Annotated[
        Milliseconds,
        Meta(description="Bound on one Redis round trip (a blocking read adds BLOCK_MS)."),
    ] = 5_000
    backoff_initial_ms: Annotated[
        Milliseconds, Meta(description="First wait after a failure of Redis or PostgreSQL.")
    ] = 100
    backoff_max_ms: Annotated[
        Milliseconds, Meta(description="Cap of the exponential backoff after failures.")
    ] = 5_000
    rules_refresh_seconds: RulesRefreshSeconds = 2.0
    idempotency_retention_days: Annotated[
        int, Meta(ge=1, description="How long PostgreSQL enforces an idempotency key.")
    ] = 30
    purge_interval_ms: Annotated[
        Milliseconds, Meta(description="How often expired idempotency keys are deleted.")
    ] = 3_600_000
    trim_interval_ms: Annotated[
        Milliseconds,
        Meta(description="How often streams are trimmed below what every group acknowledged."),
    ] = 60_000
    stats_interval_ms: Annotated[
        Milliseconds,
        Meta(description="How often stream length, pending and lag gauges are refreshed."),
    ] = 5_000
    # Retention (docs/retention.md): weekly partitions of events and facts.
    retention_interval_ms: Annotated[
        Milliseconds,
        Meta(
            description="How often partitions are created ahead and history past every"
            " project's retention is dropped (one replica per period)."
        ),
    ] = 3_600_000
    retention_weeks_ahead: Annotated[
        int,
        Meta(
            ge=2,
            le=52,
            description="Weeks of partitions kept ready ahead of now: a row past them"
            " cannot be stored, so this bounds how long retention may go without a round.",
        ),
    ] = 8
    retention_delete_chunk: Annotated[
        int,
        Meta(
            ge=100,
            le=100_000,
            description="Rows deleted per transaction when one project's history goes"
            " from a partition others still keep.",
        ),
    ] = 10_000
    metrics_host: Annotated[
        str, Meta(description="Address of the /metrics and /health server.")
    ] = "0.0.0.0"  # noqa: S104 - probes and scrapers reach the pod from outside
    metrics_port: Annotated[
        int, Meta(ge=0, le=65_535, description="Port of /metrics and /health; 0 disables.")
    ] = 9100
    consumer_name: Annotated[
        str,
        Meta(
            max_length=200,
            description="Consumer name in the group; empty means <hostname>-<pid>, unique"
            " per process (two live processes must never share a name).",
        ),
    ] = ""
    log_level: LogLevel = "INFO"
    scheduler_enabled: Annotated[
        bool,
        Meta(
            description="Run the scheduler (time-driven facts: streaks at risk, lost or"
            " frozen, closed challenges, finished leaderboard runs) beside the consumer;"
            " every replica may, they never emit a fact twice (docs/scheduler.md).",
        ),
    ] = True
    scheduler_interval_ms: Annotated[
        Milliseconds,
        Meta(description="Pause between two scheduler rounds: how late a due fact may be."),
    ] = 10_000
    scheduler_batch: Annotated[
        int,
        Meta(ge=1, le=10_000, description="Due items handled per scheduler transaction."),
    ] = 500
    scheduler_max_batches: Annotated[
        int,
        Meta(
            ge=1,
            le=10_000,
            description="Most transactions of one kind of due work per round; a larger"
            " backlog waits for the next round (and for the other replicas).",
        ),
    ] = 20

    # Backfill jobs (bricqs_processor.jobs, docs/backfill.md).
    jobs_poll_ms: Annotated[
        Milliseconds, Meta(description="How often an idle processor looks for a backfill job.")
    ] = 5_000
    jobs_chunk_size: Annotated[
        int,
        Meta(
            ge=1,
            le=10_000,
            description="Participants a backfill applies per transaction (the cursor moves"
            " with each).",
        ),
    ] = 100
    jobs_lease_ms: Annotated[
        int,
        Meta(
            ge=10_000,
            le=86_400_000,
            description="How long a processor holds a backfill job between two chunks; a job"
            " whose processor died is resumed by another once this has passed.",
        ),
    ] = 60_000
    jobs_settle_ms: Annotated[
        int,
        Meta(
            ge=0,
            le=86_400_000,
            description="How long a backfill job waits after it was asked for, so every"
            " process has loaded the definition (RULES_REFRESH_SECONDS plus a batch's time).",
        ),
    ] = 30_000

    def __post_init__(self) -> None:
        worst = self.batch_timeout_ms + self.statement_timeout_ms
        if self.claim_min_idle_ms <= worst:
            raise ValueError(
                f"CLAIM_MIN_IDLE_MS ({self.claim_min_idle_ms}) must exceed the worst batch"
                f" time plus the statement timeout, BATCH_TIMEOUT_MS + STATEMENT_TIMEOUT_MS"
                f" = {worst}"
            )
        if self.backoff_max_ms < self.backoff_initial_ms:
            raise ValueError("BACKOFF_MAX_MS must be at least BACKOFF_INITIAL_MS")
        if not isinstance(logging.getLevelName(self.log_level), int):
            raise ValueError(f"LOG_LEVEL ({self.log_level!r}) is not a logging level")

    def heartbeat_bound_seconds(self) -> float:
        """How long the consume loop may go without a heartbeat before it counts as stuck.

        Between two beats the loop waits at most about once on each bounded thing: a Redis
        round trip (a blocking read is the longest, BLOCK_MS + REDIS_TIMEOUT_MS, the
        client's socket timeout), a pooled connection then one batch transaction
        (DATABASE_TIMEOUT_MS + BATCH_TIMEOUT_MS), and one backoff (BACKOFF_MAX_MS). Twice
        their sum leaves room for the odd extra round trip (an acknowledgement, a
        re-claim), so a slow loop is never called stuck.
        """
        one_of_each = (
            self.block_ms
            + self.redis_timeout_ms
            + self.database_timeout_ms
            + self.batch_timeout_ms
            + self.backoff_max_ms
        )
        return 2 * one_of_each / 1000

    def streams_read(self) -> int:
        """How many shards' streams a processor reads: during a change of STREAM_SHARDS,
        those of both mappings, so none is left with entries nobody reads."""
        return max(self.stream_shards, self.stream_shards_previous)

    def reads_live(self) -> bool:
        """Whether this replica reads the shards' live streams."""
        return self.processor_streams != "historical"

    def reads_historical(self) -> bool:
        """Whether this replica reads the shards' historical streams (imports)."""
        return self.processor_streams != "live"

    def consumer(self) -> str:
        """This process's consumer name."""
        return self.consumer_name or f"{socket.gethostname()}-{os.getpid()}"
