"""`bricqs-processor`: run one consumer of the event streams until SIGTERM or SIGINT,
with its chores and the scheduler of time-driven facts beside it.

Settings come from environment variables (see `settings`); a bad value exits with code 2
and a message naming the variable. On SIGTERM or SIGINT the consumer stops reading,
finishes and acknowledges the batch in hand, the pools close and the process exits 0.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
from typing import Any

from psycopg_pool import AsyncConnectionPool

from bricqs.mechanics.schedule import due_work
from bricqs.redis_connect import RedisClient, connect_redis
from bricqs.runtime import GC_THRESHOLDS, ShutdownSteps, tune_garbage_collector
from bricqs.settings import load_or_exit
from bricqs.storage.health import ping
from bricqs.storage.pools import database_pool
from bricqs.storage.standings import Standings
from bricqs.web.probes import ProbeServer
from bricqs_processor import metrics
from bricqs_processor.consumer import StreamConsumer
from bricqs_processor.housekeeping import Housekeeping
from bricqs_processor.scheduler import Scheduler
from bricqs_processor.settings import ProcessorSettings

log = logging.getLogger("bricqs.processor")


class StartupError(Exception):
    """The process cannot start (the metrics port is taken, say)."""


def young_generation(batch_size: int) -> int:
    """Net allocations between two young collections: more than the objects a batch in
    hand keeps alive, on top of the consumer's own, so a batch never triggers one (a
    collection during a batch walks all its objects, every one still alive, and frees
    none of them). tests/processor/test_garbage_collection.py holds it to that with the
    benchmark's 20 rules; cyclic garbage still goes, only later."""
    return max(GC_THRESHOLDS[0], 100_000 + 200 * batch_size)


def make_redis(settings: ProcessorSettings) -> RedisClient:
    """The Redis client: a blocking read may take BLOCK_MS on top of a round trip. The
    consumer loop retries with its own backoff and knows what is safe to repeat."""
    return connect_redis(
        settings.redis_url,
        cluster=settings.redis_cluster,
        timeout_s=settings.redis_timeout_ms / 1000,
        read_timeout_s=(settings.block_ms + settings.redis_timeout_ms) / 1000,
    )


def make_pool(settings: ProcessorSettings) -> AsyncConnectionPool[Any]:
    """The PostgreSQL pool (opened by the caller); STATEMENT_TIMEOUT_MS bounds each
    statement (the role's statement_timeout behind a transaction pooler)."""
    return database_pool(
        settings.database_url,
        name="processor",
        max_size=settings.database_pool_size,
        statement_timeout_ms=settings.statement_timeout_ms,
        transaction_pooling=settings.database_transaction_pooling,
        connect_timeout_ms=settings.database_timeout_ms,
        check=True,
    )


async def serve(settings: ProcessorSettings) -> None:
    """Consume until a stop signal; then finish the batch in hand and close everything."""
    if settings.processor_nice:
        os.nice(settings.processor_nice)
    redis = make_redis(settings)
    pool = make_pool(settings)
    # wait=False: PostgreSQL being down at start-up is an outage like any other.
    await pool.open(wait=False)
    consumer = StreamConsumer(settings, redis, pool)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, consumer.stop)

    async def redis_check() -> None:
        await redis.ping()

    async def database_check() -> None:
        async with pool.connection(timeout=2.0) as conn:
            await ping(conn)

    health = None
    if settings.metrics_port:
        health = ProbeServer(
            settings.metrics_host,
            settings.metrics_port,
            {"redis": redis_check, "postgres": database_check},
            metrics=metrics.render,
            live=consumer.heartbeat.probe,
            stopping=lambda: consumer.stopping,
        )
        try:
            await health.start()
        except OSError as exc:
            await pool.close()
            await redis.aclose()
            raise StartupError(f"cannot listen on {settings.metrics_port}: {exc}") from exc
        log.info("metrics and health on %s:%d", settings.metrics_host, settings.metrics_port)
    chores = Housekeeping(settings, redis, pool).tasks()
    if settings.scheduler_enabled:
        scheduler = Scheduler(
            pool,
            consumer.rules,
            limit=settings.scheduler_batch,
            max_calls=settings.scheduler_max_batches,
            connection_timeout_s=settings.database_timeout_ms / 1000,
            work=due_work(Standings(redis)),
        )
        chores.append(asyncio.create_task(scheduler.run(settings.scheduler_interval_ms / 1000)))
    try:
        await consumer.run()
    finally:
        steps = ShutdownSteps(log)
        for task in chores:
            task.cancel()
        await steps.run("chores", asyncio.gather(*chores, return_exceptions=True))
        if health is not None:
            await steps.run("probe server", health.close())
        await steps.run("postgres pool", pool.close())
        await steps.run("redis", redis.aclose())
        if not steps.clean:
            steps.exit_now()


def main() -> int:
    """Entry point of the console script."""
    settings = load_or_exit(ProcessorSettings)
    tune_garbage_collector(young_generation(settings.batch_size))
    # `kill -USR1` prints every thread's stack to stderr: where a process that does not
    # stop is stuck, without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
