"""When a shard's historical stream is read: imports with what live traffic leaves.

Each shard has a live stream and a historical one (`bricqs.stream`). The live stream's
reader is the same as without imports. Each shard also has an import reader, which reads
at most HISTORICAL_BATCH_SIZE entries of the historical stream at a time, and only while
its shard's live reader has room (`ImportGate`): it has stored what its last read found
and that read was not full. So:
- a live event never waits behind a historical batch: its reader reads and stores on its
  own, at the same time as the import reader's batch in hand, if any (they share only
  the processor's CPU and the database);
- while live traffic fills every read, the import waits;
- after each historical batch the import reader rests as long as the batch took, so an
  import has at most half of the processor's time (HISTORICAL_REST_RATIO, default 1:
  reading on at once, the import took all the CPU the live reader left, and every live
  event shared it);
- a historical stream found empty is looked at again every HISTORICAL_POLL_MS
  (`ImportPriority`), so an idle import costs a read a second, not one per live read.

Order: within one stream a participant's entries are stored in stream order (lanes keep
it). Between the two streams there is no order: a participant's live events may be stored
before or after their imported ones, interleaved. The mechanics do not depend on it
(progress, ledger and streak periods are commutative upserts keyed by the events' own
times), so the totals are the same whatever the interleaving
(tests/processor/test_historical_import.py). No I/O; time comes from `clock`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class ImportGate:
    """Open while a shard's live reader has room: the entries of its last read are stored
    and that read was not full. Closed at first, until the live reader has read once."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._room = False

    def after_live_read(self, found: int, asked: int) -> None:
        """A live read came back with `found` of the `asked` entries (not yet stored):
        close the gate while they are stored, and for good while reads come back full."""
        self._open.clear()
        self._room = found < asked

    def without_live_reader(self) -> None:
        """Open the gate for good: this replica reads no live stream (PROCESSOR_STREAMS=
        historical), so imports wait for nothing here; live replicas serve live traffic."""
        self._room = True
        self._open.set()

    def after_live_stored(self) -> None:
        """The entries of the last live read are stored: open the gate if it had room."""
        if self._room:
            self._open.set()

    def is_open(self) -> bool:
        """Whether the import reader may read now."""
        return self._open.is_set()

    async def opened(self) -> None:
        """Return once the gate is open."""
        await self._open.wait()


@dataclass
class ImportPriority:
    """How much of a shard's historical stream to read, and when to look at it again."""

    batch_size: int
    """Most historical entries read at once (HISTORICAL_BATCH_SIZE)."""
    poll_seconds: float
    """How often an empty historical stream is looked at (HISTORICAL_POLL_MS)."""
    rest_ratio: float = 1.0
    """How many times as long as a batch took the reader rests after it
    (HISTORICAL_REST_RATIO)."""
    clock: Callable[[], float] = time.monotonic
    _next_poll: float = field(default=0.0, repr=False)

    def wait_seconds(self) -> float:
        """How long to wait before reading the historical stream (0: read now)."""
        return max(0.0, self._next_poll - self.clock())

    def found(self, count: int) -> None:
        """Record what a historical read found: nothing, and the next look waits."""
        if count == 0:
            self._next_poll = self.clock() + self.poll_seconds

    def stored(self, seconds: float) -> None:
        """Record that a historical batch took `seconds` to store: the next read waits
        `rest_ratio` times as long (1: an import has at most half of the processor's time)."""
        self._next_poll = self.clock() + self.rest_ratio * seconds
