"""The scheduler: a task beside the consumer that emits the facts the clock causes
(docs/scheduler.md).

Every replica runs it. Each round calls each kind of due work
(`bricqs.mechanics.schedule.due_work`) in its own transaction, again while a call comes
back full, so a backlog drains at `limit` items a transaction; what one replica claims
the others skip (`FOR UPDATE SKIP LOCKED`), and what a dead replica claimed is due again
as soon as its transaction is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from bricqs.mechanics.apply import RuleSource
from bricqs.mechanics.schedule import DueWork
from bricqs.mechanics.standings import utc_now
from bricqs_processor import metrics

log = logging.getLogger("bricqs.scheduler")

Clock = Callable[[], datetime]


class Scheduler:
    """Rounds of due work on a pool, on an injectable clock."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        rules_for: RuleSource,
        *,
        limit: int,
        max_calls: int,
        connection_timeout_s: float,
        clock: Clock = utc_now,
        work: Sequence[DueWork],
    ) -> None:
        self.pool = pool
        self.rules_for = rules_for
        self.limit = limit
        self.max_calls = max_calls
        self.connection_timeout_s = connection_timeout_s
        self.clock = clock
        self.work = tuple(work)

    async def round(self) -> int:
        """Do what is due now, each kind until it comes back short or `max_calls` calls
        were made (the rest waits for the next round); items seen."""
        seen = 0
        for work in self.work:
            for _ in range(self.max_calls):
                async with (
                    self.pool.connection(timeout=self.connection_timeout_s) as conn,
                    conn.transaction(),
                ):
                    count = await work(conn, self.rules_for, self.clock(), self.limit)
                seen += count
                if count < self.limit:
                    break
        return seen

    async def run(self, interval_s: float) -> None:
        """Rounds every `interval_s` until cancelled; a failed round logs and the next
        one tries again (nothing it claimed was committed, so it is all still due)."""
        while True:
            try:
                metrics.SCHEDULER_ITEMS.inc(await self.round())
                metrics.SCHEDULER_ROUNDS.inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scheduler round failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(interval_s)
