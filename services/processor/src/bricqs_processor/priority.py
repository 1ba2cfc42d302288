"""When a shard's reader reads its historical stream: live events first, imports with
what live traffic leaves.

Each shard has a live stream and a historical one (`bricqs.stream`). A reader reads its
live stream and stores what it found; only then, and only if that read left room (fewer
entries than it asked for), does it read at most HISTORICAL_BATCH_SIZE entries of the
historical stream, and store them. So a live entry waits for at most one historical read
to be stored, however long the import; while live traffic fills every read, the import
waits. A historical stream found empty is looked at again every HISTORICAL_POLL_MS, not
every round, so live reads pay nothing for imports that are not there.

While an import is under way the live read does not block: a quiet live stream would
otherwise hold the import up for BLOCK_MS between two historical reads.

Order: within one stream a participant's entries are stored in stream order (lanes keep
it). Between the two streams there is no order: a participant's live events may be stored
before or after their imported ones, interleaved. The mechanics do not depend on it
(progress, ledger and streak periods are commutative upserts keyed by the events'
own times), so the totals are the same whatever the interleaving
(tests/processor/test_historical_import.py). Pure: no I/O; time comes from `clock`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ImportPriority:
    """One shard reader's choice between its live and historical streams."""

    batch_size: int
    """Most historical entries read at once (HISTORICAL_BATCH_SIZE)."""
    poll_seconds: float
    """How often an empty historical stream is looked at (HISTORICAL_POLL_MS)."""
    clock: Callable[[], float] = time.monotonic
    under_way: bool = False
    """Whether the last historical read found entries."""
    _next_poll: float = field(default=0.0, repr=False)

    def live_block(self, block_ms: int) -> int | None:
        """How long the live read may wait for entries: not at all (None) while an
        import is under way."""
        return None if self.under_way else block_ms

    def historical_count(self, live_found: int, live_asked: int) -> int:
        """How many historical entries to read after a live read that found
        `live_found` of the `live_asked` it asked for: none when live traffic filled it,
        or when the historical stream was empty last time and it is not time to look."""
        room = live_asked - live_found
        if room <= 0:
            return 0
        if not self.under_way and self.clock() < self._next_poll:
            return 0
        return min(room, self.batch_size)

    def found(self, count: int) -> None:
        """Record what a historical read found."""
        self.under_way = count > 0
        if not self.under_way:
            self._next_poll = self.clock() + self.poll_seconds
