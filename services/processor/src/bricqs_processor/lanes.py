"""How the entries of one read are planned into transactions: by participant, so that
transactions stored at once never share a participant (whose advisory lock they would
wait for), and a hot participant's events in small transactions of their own; and when
those transactions may start (`Lanes`). No I/O, tested alone
(tests/processor/test_lanes.py, test_hot_participants.py, test_lane_order.py)."""

from __future__ import annotations

import asyncio

from bricqs_processor.entries import Entry

# A batch is stored as several transactions at once, of about LANE_SIZE entries each,
# split by participant: while PostgreSQL works on one, Python works on another (alone, a
# batch leaves PostgreSQL idle during its Python work and Python idle during its
# statements). Their participants differ, so their advisory locks never meet; the rows
# every writer shares (the event catalog) are written last, in sorted order, so they
# cannot deadlock. One pooled connection is left for housekeeping and the health check.
#
# Measured (20 rules, one replica): 1,000-entry batches in 3-4 lanes store 7-10% more
# events/s than 500-entry batches in 2; smaller lanes (125) gain nothing.
LANE_SIZE = 250


def split_into_lanes(entries: list[Entry], most: int) -> list[list[Entry]]:
    """Decoded entries split by participant into at most `most` groups of about
    LANE_SIZE, stream order kept within each."""
    count = min(most, -(-len(entries) // LANE_SIZE))
    if count <= 1:
        return [entries]
    lanes: list[list[Entry]] = [[] for _ in range(count)]
    for entry in entries:
        lanes[hash(_participant(entry)) % count].append(entry)
    return [lane for lane in lanes if lane]


# A participant that owns more than HOT_CHUNK events and at least HOT_SHARE of one read is
# hot: its events are stored in transactions of their own of at most HOT_CHUNK events,
# committed one after the other, instead of inside a lane's transaction. A transaction
# holds the advisory lock of each of its participants until it commits, and a sync request
# of that participant waits for it; with Pareto-distributed traffic one participant may
# own half of all events, and its lane would be the read's longest transaction, however
# large BATCH_SIZE is. Between two chunks the lock is free, so a waiting sync request goes
# next: the wait is bounded by a chunk, not by the batch. Each transaction has a fixed
# cost (round trips, commit, the catalog rows every writer updates), so chunks are not
# small and evenly spread traffic (the share) stays in lanes; loadtests.hot_participant
# measures both sides.
HOT_CHUNK = 200
HOT_SHARE = 0.1


def plan_transactions(entries: list[Entry], most: int) -> list[list[list[Entry]]]:
    """Decoded entries as runs of transactions: each hot participant's events in chunks
    of HOT_CHUNK (one run per participant, in stream order), the others in lanes (one
    transaction each, see split_into_lanes). Runs never share a participant, so they
    may be stored at once; a run's transactions are committed in order."""
    by_participant: dict[tuple[str, str, str], list[Entry]] = {}
    for entry in entries:
        by_participant.setdefault(_participant(entry), []).append(entry)
    least = max(HOT_CHUNK + 1, HOT_SHARE * len(entries))
    hot = {key for key, own in by_participant.items() if len(own) >= least}
    if not hot:
        return [[lane] for lane in split_into_lanes(entries, most)]
    runs = [
        [own[i : i + HOT_CHUNK] for i in range(0, len(own), HOT_CHUNK)]
        for key, own in by_participant.items()
        if key in hot
    ]
    rest = [e for e in entries if _participant(e) not in hot]
    if rest:
        runs.extend([lane] for lane in split_into_lanes(rest, most))
    # Longest first, so the longest run does not start last.
    runs.sort(key=lambda run: -sum(map(len, run)))
    return runs


def participants(run: list[list[Entry]]) -> frozenset[tuple[str, str, str]]:
    """The participants of a run's entries (what `Lanes` keeps apart)."""
    return frozenset(_participant(entry) for part in run for entry in part)


def _participant(entry: Entry) -> tuple[str, str, str]:
    envelope = entry.envelope
    assert envelope is not None
    return (envelope.project_id, envelope.environment, envelope.participant_id)


class Lane:
    """One run's place in `Lanes`: waiting for a lane, then holding it until released."""

    def __init__(self, lanes: Lanes, participants: frozenset[tuple[str, str, str]]) -> None:
        self.participants = participants
        self._lanes = lanes
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done once `Lanes` gave it a lane."""

    async def granted(self, within: float) -> bool:
        """Wait up to `within` seconds for the lane: whether it was granted."""
        try:
            await asyncio.wait_for(asyncio.shield(self.started), within)
        except TimeoutError:
            return False
        return True

    def release(self) -> None:
        """Give the lane back, or the place in line if it was not granted yet."""
        self._lanes.release(self)


class Lanes:
    """Which runs of transactions may be stored now: at most `count` at once over every
    reader of the process, each started as soon as a lane is free and no running run holds
    one of its participants, never ahead of an earlier run that shares one.

    So a participant's transactions still run one at a time and in the order they were
    read, and none waits in PostgreSQL for the advisory lock of another transaction of
    this process; but a read's runs need not wait for the slowest run of the read before
    (a read's lanes finish up to a tenth of its time apart): each starts as soon as the
    earlier run with its participants commits, while the reader reads on.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._running: list[Lane] = []
        self._waiting: list[Lane] = []

    def enter(self, participants: frozenset[tuple[str, str, str]]) -> Lane:
        """Join the line for a lane (`Lane.granted` waits for it)."""
        lane = Lane(self, participants)
        self._waiting.append(lane)
        self._grant()
        return lane

    def release(self, lane: Lane) -> None:
        """See `Lane.release`."""
        if lane in self._running:
            self._running.remove(lane)
        elif lane in self._waiting:
            self._waiting.remove(lane)
            lane.started.cancel()  # nobody waits on it any more
        self._grant()

    def _grant(self) -> None:
        if not self._waiting or len(self._running) >= self.count:
            return  # the usual case while reading ahead: every lane busy
        held: set[tuple[str, str, str]] = set()
        for running in self._running:
            held |= running.participants
        for lane in list(self._waiting):
            if len(self._running) >= self.count:
                return
            if held.isdisjoint(lane.participants):
                self._waiting.remove(lane)
                self._running.append(lane)
                lane.started.set_result(None)
            held |= lane.participants  # later runs never overtake this one
