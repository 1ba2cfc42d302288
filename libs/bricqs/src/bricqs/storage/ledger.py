"""The points ledger: one row per award or deduct, and the sums that caps read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple

from bricqs.storage.arrays import (
    TEXTS,
    integers,
    integers_sql,
    jsonb_array,
    text_array,
    texts,
    timestamptz_array,
    unnest_texts,
)
from bricqs.storage.tenants import Conn, Tenant


class LedgerEntry:
    """One ledger line to write.

    A plain class (most events earn one): compiled (mypyc), a plain class is built
    natively, while a NamedTuple's generated constructor runs as interpreted Python.
    """

    __slots__ = (
        "amount",
        "boosts",
        "cap_bucket",
        "entry_id",
        "expires_at",
        "fact_id",
        "idempotency_key",
        "kind",
        "occurred_at",
        "participant_id",
        "reason",
        "source",
    )

    def __init__(
        self,
        entry_id: str,
        participant_id: str,
        amount: int,
        kind: str,
        source: str,
        fact_id: str | None,
        cap_bucket: str | None,
        occurred_at: datetime,
        reason: str = "",
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
        boosts: list[dict[str, Any]] | None = None,
    ) -> None:
        self.entry_id: Final = entry_id
        self.participant_id: Final = participant_id
        self.amount: Final = amount
        self.kind: Final = kind
        self.source: Final = source
        self.fact_id: Final = fact_id
        self.cap_bucket: Final = cap_bucket
        self.occurred_at: Final = occurred_at
        self.reason: Final = reason
        self.idempotency_key: Final = idempotency_key
        self.expires_at: Final = expires_at
        """When the points of a credit expire (None: never); such a credit is also a lot."""
        self.boosts: Final = boosts
        """The boosts that multiplied an earn entry ({code, multiplier} each)."""

    def for_amount(self, amount: int) -> LedgerEntry:
        """This entry for `amount` points instead (a cap trims an award)."""
        return LedgerEntry(
            self.entry_id,
            self.participant_id,
            amount,
            self.kind,
            self.source,
            self.fact_id,
            self.cap_bucket,
            self.occurred_at,
            self.reason,
            self.idempotency_key,
            self.expires_at,
            self.boosts,
        )


async def earned_in_cap_buckets(
    conn: Conn, tenant: Tenant, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], int]:
    """Points already earned per (source, participant, cap bucket)."""
    if not keys:
        return {}
    unique = sorted(set(keys))
    cursor = await conn.execute(
        """
        SELECT t.s, t.pid, t.b, l.total
        FROM unnest(%b::text[], %b::text[], %b::text[]) AS t(s, pid, b)
        CROSS JOIN LATERAL (
            SELECT sum(amount)::bigint AS total FROM points_ledger l
            WHERE l.project_id = %s AND l.environment = %s
              AND l.source = t.s AND l.participant_id = t.pid AND l.cap_bucket = t.b
        ) l
        WHERE l.total IS NOT NULL
        """,
        (
            text_array([k[0] for k in unique]),
            text_array([k[1] for k in unique]),
            text_array([k[2] for k in unique]),
            tenant.project_id,
            tenant.environment,
        ),
    )
    return {(r[0], r[1], r[2]): int(r[3]) for r in await cursor.fetchall()}


def _write_ledger_sql(conflict: str) -> str:
    return f"""
    WITH inserted AS (
        INSERT INTO points_ledger (project_id, environment, entry_id, participant_id,
            amount, kind, source, fact_id, cap_bucket, occurred_at, reason,
            idempotency_key, boosts)
        SELECT %s, %s, * FROM unnest({TEXTS}, {TEXTS}, {integers_sql("int8")}, {unnest_texts(2)},
            %b::text[], %b::text[], %b::timestamptz[], %b::text[], %b::text[], %b::jsonb[])
        {conflict}
        RETURNING participant_id, entry_id, amount, occurred_at
    ), lots AS (
        INSERT INTO points_lots (project_id, environment, participant_id, lot_id, amount,
            remaining, earned_at, expires_at)
        SELECT %s, %s, i.participant_id, i.entry_id, i.amount, i.amount, i.occurred_at,
            x.expires_at
        FROM inserted i JOIN unnest(%b::text[], %b::timestamptz[]) AS x(id, expires_at)
          ON x.id = i.entry_id
    )
    SELECT entry_id FROM inserted
"""  # noqa: S608 - fixed SQL fragments, never input


# Any unique index may turn an entry away: a fact's award (once per source and fact), a
# manual entry's idempotency key, an entry id made from what it records (an expiry's).
_WRITE_LEDGER = _write_ledger_sql("ON CONFLICT DO NOTHING")
# Only the fact's award can: see `write_ledger`'s `fresh`.
_WRITE_FRESH_LEDGER = _write_ledger_sql(
    "ON CONFLICT (project_id, environment, source, fact_id) WHERE fact_id IS NOT NULL DO NOTHING"
)


async def write_ledger(
    conn: Conn, tenant: Tenant, entries: Sequence[LedgerEntry], *, fresh: bool = False
) -> list[str]:
    """Insert entries (once per source and fact); return the ids actually inserted.

    A credit that expires becomes a lot in the same statement (`storage.lots`), for the
    entries inserted only, so a lot exists exactly once, keyed by its entry id.

    `fresh`: every entry id was just made by `ulid()` and no entry has an idempotency
    key (a round's earnings and rewards), so only the once-per-fact index can find a
    conflict, and it is the only one checked before each row goes in: with every unique
    index an arbiter, PostgreSQL also looked each new id up in the primary key first,
    about a seventh of the statement's cost (docs/scaling.md).
    """
    if not entries:
        return []
    lots = [(e.entry_id, e.expires_at) for e in entries if e.amount > 0 and e.expires_at]
    cursor = await conn.execute(
        _WRITE_FRESH_LEDGER if fresh else _WRITE_LEDGER,
        (
            tenant.project_id,
            tenant.environment,
            *texts([e.entry_id for e in entries]),
            *texts([e.participant_id for e in entries]),
            integers([e.amount for e in entries]),
            *texts([e.kind for e in entries]),
            *texts([e.source for e in entries]),
            text_array([e.fact_id for e in entries]),
            text_array([e.cap_bucket for e in entries]),
            timestamptz_array([e.occurred_at for e in entries]),
            text_array([e.reason for e in entries]),
            text_array([e.idempotency_key for e in entries]),
            jsonb_array([e.boosts for e in entries]),
            tenant.project_id,
            tenant.environment,
            text_array([lot_id for lot_id, _ in lots]),
            timestamptz_array([expires_at for _, expires_at in lots]),
        ),
    )
    return [row[0] for row in await cursor.fetchall()]


class ManualEntry(NamedTuple):
    """A manual ledger entry, as an idempotency key finds it."""

    entry_id: str
    participant_id: str
    amount: int
    reason: str


async def find_manual_entry(conn: Conn, tenant: Tenant, idempotency_key: str) -> ManualEntry | None:
    """A manual ledger entry by its idempotency key."""
    cursor = await conn.execute(
        "SELECT entry_id, participant_id, amount, reason FROM points_ledger"
        " WHERE project_id = %s AND environment = %s AND idempotency_key = %s",
        (tenant.project_id, tenant.environment, idempotency_key),
    )
    row = await cursor.fetchone()
    return None if row is None else ManualEntry(row[0], row[1], int(row[2]), row[3])


class LedgerLine(NamedTuple):
    """A written ledger entry, as a participant's history shows it."""

    entry_id: str
    amount: int
    kind: str
    source: str
    fact_id: str | None
    reason: str
    occurred_at: datetime
    created_at: datetime


async def list_ledger(
    conn: Conn, tenant: Tenant, participant_id: str, *, after: str | None, limit: int
) -> list[LedgerLine]:
    """A participant's ledger, newest first, after a cursor (an entry id)."""
    cursor = await conn.execute(
        "SELECT entry_id, amount, kind, source, fact_id, reason, occurred_at, created_at"
        " FROM points_ledger WHERE project_id = %s AND environment = %s AND participant_id = %s"
        " AND (%s::text IS NULL OR entry_id < %s) ORDER BY entry_id DESC LIMIT %s",
        (tenant.project_id, tenant.environment, participant_id, after, after, limit),
    )
    return [LedgerLine(*row) for row in await cursor.fetchall()]
