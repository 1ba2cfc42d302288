"""Storing events and their facts: the one write path of the sync endpoint and the processor.

`store_events` takes a batch of envelopes and, inside the caller's transaction, with one
statement per table whatever the batch size:
1. claims idempotency keys (a key held by another event makes this one a duplicate);
2. inserts events keyed by event_id, ON CONFLICT DO NOTHING, so a redelivery is a no-op
   (the key includes the partition key, `received_at` raised to the table's floor, which
   a redelivered stream entry carries unchanged: see docs/retention.md);
3. inserts the custom fact of each newly inserted event (and only those), without a
   conflict check: the fact of an event stored just now cannot have been stored before;
4. upserts participants and the event catalog from the newly inserted events (the
   catalog possibly later, by the caller: see `store_events`).
Rows that several writers may update at once (participants, catalog) are written in
sorted key order, so concurrent transactions lock them in the same order and cannot
deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from psycopg import AsyncConnection

from bricqs.facts import derive_fact, json_type
from bricqs.schemas import Envelope, Fact, json_encoder
from bricqs.storage.arrays import (
    SEPARATOR,
    integers,
    integers_sql,
    text_array,
    text_columns,
    texts,
    timestamptz_array,
    unnest_texts,
)


class Outcome(StrEnum):
    """What storing did with one envelope."""

    STORED = "stored"
    """Newly inserted, with its fact: mechanics should run for it."""
    ALREADY_STORED = "already_stored"
    """This very event_id was stored before (a redelivery or replay): nothing changed."""
    DUPLICATE = "duplicate"
    """Its idempotency key belongs to another event: dropped."""


@dataclass(frozen=True)
class Holder:
    """The event that holds an idempotency key."""

    event_id: str
    payload_hash: str | None


@dataclass
class StoreResult:
    """Per-envelope outcomes of `store_events`, and the facts it inserted."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    holders: dict[str, Holder] = field(default_factory=dict)
    """For duplicates: event_id of the duplicate -> the event holding its key."""
    facts: list[Fact] = field(default_factory=list)
    stored_at: dict[str, datetime] = field(default_factory=dict)
    """For newly stored events: event_id -> the stored_at time of its row (when asked
    for: `store_events`' `stored_times`)."""
    inserted: list[Envelope] = field(default_factory=list)
    """The envelopes newly stored, in input order."""

    @property
    def stored(self) -> int:
        """How many envelopes were newly stored."""
        return sum(1 for o in self.outcomes.values() if o is Outcome.STORED)

    def count(self, outcome: Outcome) -> int:
        """How many envelopes ended with `outcome`."""
        return sum(1 for o in self.outcomes.values() if o is outcome)


def _json(value: Any) -> str:
    return json_encoder.encode(value).decode()


async def _claim_idempotency_keys(
    conn: AsyncConnection[Any], envelopes: Sequence[Envelope], ttl: timedelta
) -> dict[tuple[str, str, str], Holder]:
    """Claim every key; return who holds each key after the claim."""
    first: dict[tuple[str, str, str], Envelope] = {}
    for env in envelopes:
        if env.idempotency_key is not None:
            first.setdefault((env.project_id, env.environment, env.idempotency_key), env)
    if not first:
        return {}
    keys = sorted(first)
    columns = (
        text_array([k[0] for k in keys]),
        text_array([k[1] for k in keys]),
        text_array([k[2] for k in keys]),
        text_array([first[k].event_id for k in keys]),
        text_array([first[k].payload_hash for k in keys]),
    )
    # An expired key (not yet purged) is taken over by the new event.
    await conn.execute(
        """
        INSERT INTO idempotency_keys
            (project_id, environment, idempotency_key, event_id, payload_hash, expires_at)
        SELECT p, e, k, ev, h, now() + %s
        FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[]) AS t(p, e, k, ev, h)
        ON CONFLICT (project_id, environment, idempotency_key) DO UPDATE
            SET event_id = EXCLUDED.event_id, payload_hash = EXCLUDED.payload_hash,
                created_at = now(), expires_at = EXCLUDED.expires_at
            WHERE idempotency_keys.expires_at < now()
        """,
        (ttl, *columns),
    )
    cursor = await conn.execute(
        """
        SELECT t.p, t.e, t.k, i.event_id, i.payload_hash
        FROM unnest(%b::text[], %b::text[], %b::text[]) AS t(p, e, k)
        CROSS JOIN LATERAL (
            SELECT event_id, payload_hash FROM idempotency_keys i
            WHERE i.project_id = t.p AND i.environment = t.e AND i.idempotency_key = t.k
            OFFSET 0  -- a lookup per key: see the storage package on batch reads
        ) i
        """,
        columns[:3],
    )
    return {(r[0], r[1], r[2]): Holder(r[3], r[4]) for r in await cursor.fetchall()}


_EVENT_ROWS = f"""
    INSERT INTO events (project_id, environment, event_id, event_name, participant_id,
                        properties, occurred_at, received_at, idempotency_key, retention_at)
    SELECT p, e, id, n, pid, props::jsonb, oc, rc, k,
           greatest(rc, (SELECT floor FROM retention_floors WHERE parent = 'events'))
    FROM unnest({unnest_texts(6)}, %b::timestamptz[], %b::timestamptz[], %b::text[])
         AS t(p, e, id, n, pid, props, oc, rc, k)
    ON CONFLICT (project_id, environment, event_id, retention_at) DO NOTHING
"""  # noqa: S608 - fixed SQL fragments, never input
_INSERT_EVENTS = _EVENT_ROWS + "RETURNING event_id"
# A timestamptz comes back converted to the session's zone, which costs the processor
# about 1% of a batch (a zoneinfo call per row): only a caller that answers with it asks.
_INSERT_EVENTS_TIMED = _EVENT_ROWS + "RETURNING event_id, stored_at"


async def store_events(
    conn: AsyncConnection[Any],
    envelopes: Sequence[Envelope],
    *,
    idempotency_ttl: timedelta,
    catalog: bool = True,
    stored_times: bool = True,
) -> StoreResult:
    """Store `envelopes` and their facts idempotently, inside the caller's transaction.

    `stored_times=False` leaves `result.stored_at` empty (the processor answers no one).

    With `catalog=False` the caller records the event catalog itself, with
    `upsert_catalog(conn, result.inserted)`, as late in the transaction as it can: a
    catalog row is shared by every writer of the tenant (one per event name), so its
    row lock, held until commit, serialises them all.
    """
    result = StoreResult()
    holders = await _claim_idempotency_keys(conn, envelopes, idempotency_ttl)
    candidates: list[Envelope] = []
    seen: set[str] = set()
    for env in envelopes:
        if env.event_id in seen:
            continue  # the same entry twice in one batch (a reclaim raced a read)
        seen.add(env.event_id)
        if env.idempotency_key is not None:
            holder = holders.get((env.project_id, env.environment, env.idempotency_key))
            if holder is not None and holder.event_id != env.event_id:
                result.outcomes[env.event_id] = Outcome.DUPLICATE
                result.holders[env.event_id] = holder
                continue
        candidates.append(env)
    if not candidates:
        return result

    cursor = await conn.execute(
        _INSERT_EVENTS_TIMED if stored_times else _INSERT_EVENTS,
        (
            *texts([c.project_id for c in candidates]),
            *texts([c.environment for c in candidates]),
            *texts([c.event_id for c in candidates]),
            *texts([c.event_name for c in candidates]),
            *texts([c.participant_id for c in candidates]),
            *texts([_json(c.properties) for c in candidates]),
            timestamptz_array([c.occurred_at for c in candidates]),
            timestamptz_array([c.received_at for c in candidates]),
            text_array([c.idempotency_key for c in candidates]),
        ),
    )
    rows = await cursor.fetchall()
    if stored_times:
        result.stored_at = {row[0]: row[1] for row in rows}
    inserted_ids = {row[0] for row in rows}
    inserted = [c for c in candidates if c.event_id in inserted_ids]
    for env in candidates:
        result.outcomes[env.event_id] = (
            Outcome.STORED if env.event_id in inserted_ids else Outcome.ALREADY_STORED
        )
    if not inserted:
        return result

    result.inserted = inserted
    result.facts = [derive_fact(env) for env in inserted]
    # Fresh: a custom fact's id is its event's, and its event went in just now, so the
    # fact was never stored either (a redelivered event is not inserted, so nor is its
    # fact). Skipping the conflict check cut a custom fact's insert by about a third.
    await insert_facts(conn, result.facts, fresh=True)
    await _upsert_participants(conn, inserted)
    if catalog:
        await upsert_catalog(conn, inserted)
    return result


async def insert_facts(
    conn: AsyncConnection[Any], facts: Sequence[Fact], *, fresh: bool = False
) -> None:
    """Insert facts (custom or system); a fact id seen before is left as it is.

    `fresh`: no id can have been seen, because each was just made by `ids.new_fact_id` (a
    round's outcomes) or is the custom fact of an event this transaction just inserted
    (`store_events`). The insert then skips the conflict check and its speculative
    insertion, a good part of a fact row's cost; a fact seen before would fail the
    statement (a unique violation) instead of being left as it is.

    "Seen before" holds while the fact is retained (docs/retention.md): the unique key
    includes the partition key, `occurred_at` raised to the table's floor, so a fact id
    must always come with the same `occurred_at`, as every maker of facts does (a
    scheduled fact's deterministic id with its period's end, say).

    The same statement counts the facts it inserted in fact_counts (migration 0013), so
    the counts are as exactly-once as the facts, at no extra round trip."""
    if not facts:
        return
    projects = [f.project_id for f in facts]
    environments = [f.environment for f in facts]
    types = [f.fact_type for f in facts]
    rows = (
        *texts(projects),
        *texts(environments),
        *texts([f.fact_id for f in facts]),
        *texts(types),
        *texts([f.participant_id for f in facts]),
        *texts([f.event_id for f in facts]),
        *texts([_json(f.properties) for f in facts]),
        timestamptz_array([f.occurred_at for f in facts]),
    )
    if not fresh:
        await conn.execute(_INSERT_FACTS, rows)
        return
    counts = _counts(projects, environments, types)
    keys = sorted(counts)
    await conn.execute(
        _INSERT_FRESH_FACTS,
        (
            *rows,
            *texts([k[0] for k in keys]),
            *texts([k[1] for k in keys]),
            *texts([k[2] for k in keys]),
            integers([counts[k] for k in keys]),
        ),
    )


def _counts(
    projects: list[str], environments: list[str], types: list[str]
) -> dict[tuple[str, str, str], int]:
    """How many facts of each (project, environment, type) the columns hold.

    Facts of one tenant (a round's always, a processor batch's often) are counted by type
    alone: a tuple key per fact cost the processor nearly what grouping the inserted rows
    cost PostgreSQL."""
    project_id, environment = projects[0], environments[0]
    if projects.count(project_id) == len(types) == environments.count(environment):
        by_type: dict[str, int] = {}
        for fact_type in types:
            by_type[fact_type] = by_type.get(fact_type, 0) + 1
        return {(project_id, environment, t): n for t, n in by_type.items()}
    by_key: dict[tuple[str, str, str], int] = {}
    for key in zip(projects, environments, types, strict=True):
        by_key[key] = by_key.get(key, 0) + 1
    return by_key


_FACT_ROWS = f"""
        INSERT INTO facts (project_id, environment, fact_id, fact_type, participant_id,
                           event_id, properties, occurred_at, retention_at)
        SELECT p, e, id, t, pid, ev, props::jsonb, oc,
               greatest(oc, (SELECT floor FROM retention_floors WHERE parent = 'facts'))
        FROM unnest({unnest_texts(7)}, %b::timestamptz[])
             AS x(p, e, id, t, pid, ev, props, oc)
"""  # noqa: S608 - fixed SQL fragments, never input
_COUNTS = """
    INSERT INTO fact_counts AS c
        (project_id, environment, minute, fact_type, writer, count)
    SELECT p, e, date_trunc('minute', now()), t, pg_backend_pid(), n
"""
_ADD_COUNTS = """
    ON CONFLICT (project_id, environment, minute, fact_type, writer)
        DO UPDATE SET count = c.count + EXCLUDED.count
"""
# Counted from what the insert returns: a fact seen before is neither inserted nor counted.
_INSERT_FACTS = f"""
    WITH inserted AS ({_FACT_ROWS} ON CONFLICT DO NOTHING
        RETURNING project_id AS p, environment AS e, fact_type AS t)
    {_COUNTS}
    FROM (SELECT p, e, t, count(*) AS n FROM inserted GROUP BY p, e, t) AS x
    {_ADD_COUNTS}
"""  # noqa: S608 - fixed SQL fragments, never input
# Every row goes in or the statement fails, so the caller's counts are the inserted ones:
# returning each row and grouping them cost a fact about 13% more (docs/scaling.md).
# (A data-modifying WITH runs to completion whether or not the query reads it.)
_INSERT_FRESH_FACTS = f"""
    WITH inserted AS ({_FACT_ROWS})
    {_COUNTS}
    FROM unnest({unnest_texts(3)}, {integers_sql("int8")}) AS x(p, e, t, n)
    {_ADD_COUNTS}
"""


_UPSERT_PARTICIPANTS = f"""
    INSERT INTO participants AS p
        (project_id, environment, participant_id, first_seen_at, last_seen_at, event_count)
    SELECT * FROM unnest({unnest_texts(3)}, %b::timestamptz[], %b::timestamptz[],
                         {integers_sql("int8")})
    ON CONFLICT (project_id, environment, participant_id) DO UPDATE SET
        first_seen_at = LEAST(p.first_seen_at, EXCLUDED.first_seen_at),
        last_seen_at = GREATEST(p.last_seen_at, EXCLUDED.last_seen_at),
        event_count = p.event_count + EXCLUDED.event_count
"""  # noqa: S608 - fixed SQL fragments, never input


def _sighted(
    key: tuple[str, str, str],
    at: datetime,
    seen: dict[tuple[str, str, str], tuple[datetime, datetime, int]],
) -> None:
    """Fold one sighting of `key` at `at` into `seen`: (first, last, count)."""
    found = seen.get(key)
    if found is None:
        seen[key] = (at, at, 1)
        return
    # Comparisons, not min() and max(): compiled, those are calls through Python's call
    # protocol, and this runs per event.
    first, last, count = found
    seen[key] = (at if at < first else first, at if at > last else last, count + 1)


async def _upsert_participants(conn: AsyncConnection[Any], events: Iterable[Envelope]) -> None:
    seen: dict[tuple[str, str, str], tuple[datetime, datetime, int]] = {}
    for env in events:
        _sighted((env.project_id, env.environment, env.participant_id), env.occurred_at, seen)
    # Sorted by one joined string, not the tuple (see `progress._progress_rows`).
    keys = sorted(seen, key=SEPARATOR.join)
    await conn.execute(
        _UPSERT_PARTICIPANTS,
        (
            *text_columns(keys, 3),
            timestamptz_array([seen[k][0] for k in keys]),
            timestamptz_array([seen[k][1] for k in keys]),
            integers([seen[k][2] for k in keys]),
        ),
    )


async def upsert_catalog(conn: AsyncConnection[Any], events: Iterable[Envelope]) -> None:
    """Count newly stored events in the event catalog (names, times, property types)."""
    names: dict[tuple[str, str, str], tuple[datetime, datetime, int]] = {}
    types: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
    for env in events:
        key = (env.project_id, env.environment, env.event_name)
        _sighted(key, env.received_at, names)
        found = types.get(key)
        if found is None:
            found = types[key] = set()
        for prop, value in env.properties.items():
            found.add((prop, json_type(value)))
    properties = [(*key, *pair) for key, pairs in types.items() for pair in pairs]
    keys = sorted(names)
    await conn.execute(
        """
        INSERT INTO event_catalog AS c
            (project_id, environment, event_name, first_seen_at, last_seen_at, event_count)
        SELECT * FROM unnest(%b::text[], %b::text[], %b::text[],
                             %b::timestamptz[], %b::timestamptz[], %b::bigint[])
        ON CONFLICT (project_id, environment, event_name) DO UPDATE SET
            first_seen_at = LEAST(c.first_seen_at, EXCLUDED.first_seen_at),
            last_seen_at = GREATEST(c.last_seen_at, EXCLUDED.last_seen_at),
            event_count = c.event_count + EXCLUDED.event_count
        """,
        (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [names[k][0] for k in keys],
            [names[k][1] for k in keys],
            [names[k][2] for k in keys],
        ),
    )
    if properties:
        rows = sorted(properties)
        await conn.execute(
            """
            INSERT INTO event_catalog_properties
                (project_id, environment, event_name, property_key, json_type)
            SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[])
            ON CONFLICT DO NOTHING
            """,
            tuple([r[i] for r in rows] for i in range(5)),
        )


async def find_stored_event(
    conn: AsyncConnection[Any], project_id: str, environment: str, event_id: str
) -> datetime | None:
    """When the event was stored, or None if it is not (yet) stored."""
    cursor = await conn.execute(
        "SELECT stored_at FROM events WHERE project_id = %s AND environment = %s AND event_id = %s",
        (project_id, environment, event_id),
    )
    row = await cursor.fetchone()
    return None if row is None else row[0]


async def purge_expired_idempotency_keys(conn: AsyncConnection[Any], limit: int = 10_000) -> int:
    """Delete up to `limit` expired idempotency keys; return how many were deleted."""
    cursor = await conn.execute(
        """
        DELETE FROM idempotency_keys WHERE ctid IN (
            SELECT ctid FROM idempotency_keys WHERE expires_at < now() LIMIT %s)
        """,
        (limit,),
    )
    return cursor.rowcount
