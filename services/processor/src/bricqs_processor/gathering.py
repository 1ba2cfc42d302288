"""Entries read by several shard readers, stored together as one batch.

Each shard has its own reader (a command may touch one Redis Cluster slot only), and each
reads its share of BATCH_SIZE. Stored shard by shard, a process with 8 shards would commit
batches of an eighth of the size, and a transaction's fixed cost (round trips, commit, the
catalog rows every writer updates) would be paid eight times as often: measured, one
processor drained 0.79x as fast on 8 shards as on 1. Gathered, the readers that wait meanwhile
are stored in the next batch together, as one read over every shard used to be.

Entries of different shards never belong to one participant, so storing them together
keeps each participant's order; the stored batch is split into lanes by participant as
any other (`lanes.plan_transactions`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bricqs_processor.entries import Entry


class Gathering:
    """Stores what readers hand in: the first reader to arrive stores every batch handed
    in until none waits, the others wait for theirs to be stored."""

    def __init__(self, store: Callable[[list[Entry]], Awaitable[None]]) -> None:
        self._store = store
        self._waiting: list[tuple[list[Entry], asyncio.Future[None]]] = []
        self._storing = False

    async def store(self, entries: list[Entry]) -> None:
        """Return once `entries` are stored (together with others handed in meanwhile)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((entries, done))
        if self._storing:
            await done
            return
        self._storing = True
        try:
            while self._waiting:
                taken, self._waiting = self._waiting, []
                await self._store([entry for batch, _ in taken for entry in batch])
                for _, waiter in taken:
                    waiter.set_result(None)
        except BaseException:
            # A store that fails ends the process (the readers' task group); the readers
            # waiting for it stop with it, their entries unacknowledged (redelivered).
            for _, waiter in [*taken, *self._waiting]:
                waiter.cancel()
            self._waiting = []
            raise
        finally:
            self._storing = False
