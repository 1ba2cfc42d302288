"""How the entries of one read are planned into transactions: by participant, so that
transactions stored at once never share a participant (whose advisory lock they would
wait for), and a hot participant's events in small transactions of their own. Pure: no
I/O, tested alone (tests/processor/test_lanes.py, test_hot_participants.py)."""

from __future__ import annotations

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


def _participant(entry: Entry) -> tuple[str, str, str]:
    envelope = entry.envelope
    assert envelope is not None
    return (envelope.project_id, envelope.environment, envelope.participant_id)
