"""The rewards catalogue: rewards and their inventory (a stock count or a pool of codes),
and the claims that bought them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from psycopg.errors import CheckViolation

from bricqs.storage.tenants import Conn, Tenant

# What a pool reward has left, or a stock reward (NULL: unlimited).
_POOL_LEFT = """(SELECT count(*) FROM reward_codes c WHERE c.project_id = r.project_id
    AND c.environment = r.environment AND c.reward_code = r.code AND c.status = 'available')"""
_COLUMNS = """r.code, r.status, r.body, r.stock, r.code_pool,
    CASE WHEN r.code_pool THEN {pool_left}
    WHEN r.stock IS NOT NULL THEN GREATEST(r.stock - r.claimed, 0) END AS remaining,
    r.version, r.created_at, r.updated_at"""
_REWARD = _COLUMNS.format(pool_left=_POOL_LEFT)
# The same without counting a pool's codes (its `remaining` is then NULL): a claim needs
# no count, and counting reads as many index entries as the pool has codes left.
_REWARD_UNCOUNTED = _COLUMNS.format(pool_left="NULL")


class RewardRow(NamedTuple):
    """A stored reward with what it has left."""

    code: str
    status: str
    body: dict[str, Any]
    stock: int | None
    code_pool: bool
    remaining: int | None
    """Codes available, or stock not claimed; None when unlimited."""
    version: int
    created_at: datetime
    updated_at: datetime


async def create_reward(
    conn: Conn, tenant: Tenant, code: str, status: str, stock: int | None, pool: bool, body: str
) -> RewardRow | None:
    """Insert a reward; None when the code is taken."""
    cursor = await conn.execute(
        f"""
        WITH r AS (
            INSERT INTO rewards (project_id, environment, code, status, stock, code_pool, body)
            VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT DO NOTHING RETURNING *
        ) SELECT {_REWARD} FROM r
        """,  # noqa: S608 - constant column lists
        (tenant.project_id, tenant.environment, code, status, stock, pool, body),
    )
    row = await cursor.fetchone()
    return None if row is None else RewardRow(*row)


async def update_reward(
    conn: Conn, tenant: Tenant, code: str, status: str, stock: int | None, body: str
) -> RewardRow | None:
    """Replace a reward's definition (its claims and codes stay); None when none."""
    cursor = await conn.execute(
        f"""
        WITH r AS (
            UPDATE rewards SET status = %s, stock = %s, body = %s::jsonb,
                version = version + 1, updated_at = now()
            WHERE project_id = %s AND environment = %s AND code = %s RETURNING *
        ) SELECT {_REWARD} FROM r
        """,  # noqa: S608 - constant column lists
        (status, stock, body, tenant.project_id, tenant.environment, code),
    )
    row = await cursor.fetchone()
    return None if row is None else RewardRow(*row)


async def get_reward(
    conn: Conn, tenant: Tenant, code: str, *, count_codes: bool = True
) -> RewardRow | None:
    """One reward by code (a pool's `remaining` is None unless `count_codes`)."""
    columns = _REWARD if count_codes else _REWARD_UNCOUNTED
    cursor = await conn.execute(
        f"SELECT {columns} FROM rewards r"  # noqa: S608 - constant column lists
        " WHERE r.project_id = %s AND r.environment = %s AND r.code = %s",
        (tenant.project_id, tenant.environment, code),
    )
    row = await cursor.fetchone()
    return None if row is None else RewardRow(*row)


async def list_rewards(
    conn: Conn, tenant: Tenant, *, include_archived: bool = False
) -> list[RewardRow]:
    """A tenant's rewards, by code."""
    cursor = await conn.execute(
        f"SELECT {_REWARD} FROM rewards r WHERE r.project_id = %s AND r.environment = %s"  # noqa: S608 - constant column lists
        " AND (%s OR r.status <> 'archived') ORDER BY r.code",
        (tenant.project_id, tenant.environment, include_archived),
    )
    return [RewardRow(*row) for row in await cursor.fetchall()]


async def add_codes(conn: Conn, tenant: Tenant, reward_code: str, codes: Sequence[str]) -> int:
    """Add codes to a reward's pool; codes it already holds (in any state) are skipped.
    The number added."""
    cursor = await conn.execute(
        "INSERT INTO reward_codes (project_id, environment, reward_code, code)"
        " SELECT %s, %s, %s, c FROM unnest(%b::text[]) AS c ON CONFLICT DO NOTHING",
        (tenant.project_id, tenant.environment, reward_code, list(codes)),
    )
    return cursor.rowcount


async def code_counts(conn: Conn, tenant: Tenant, reward_code: str) -> dict[str, int]:
    """How many of a pool's codes are available, claimed and void."""
    cursor = await conn.execute(
        "SELECT status, count(*) FROM reward_codes"
        " WHERE project_id = %s AND environment = %s AND reward_code = %s GROUP BY status",
        (tenant.project_id, tenant.environment, reward_code),
    )
    counts = {"available": 0, "claimed": 0, "void": 0}
    counts.update({row[0]: int(row[1]) for row in await cursor.fetchall()})
    return counts


# ---------------------------------------------------------------------------------------
# Inventory: taken by a claim, given back by a cancel, in the claim's transaction.


async def take_stock(conn: Conn, tenant: Tenant, reward_code: str) -> bool:
    """Count one more claim against a stock reward, if any is left. The row stays locked
    until the transaction ends: concurrent claims of this reward wait, then see the count
    this one committed, so none oversells (the constraint `claimed <= stock` guards it
    too)."""
    cursor = await conn.execute(
        "UPDATE rewards SET claimed = claimed + 1 WHERE project_id = %s AND environment = %s"
        " AND code = %s AND claimed < stock",
        (tenant.project_id, tenant.environment, reward_code),
    )
    return cursor.rowcount == 1


def is_oversold(exc: BaseException) -> bool:
    """Whether a statement failed for taking more than a reward's stock (or lowering the
    stock below what is claimed)."""
    return (
        isinstance(exc, CheckViolation) and exc.diag.constraint_name == "rewards_stock_not_oversold"
    )


async def give_back_stock(conn: Conn, tenant: Tenant, reward_code: str) -> None:
    """Count one claim fewer against a stock reward (a cancelled claim)."""
    await conn.execute(
        "UPDATE rewards SET claimed = claimed - 1 WHERE project_id = %s AND environment = %s"
        " AND code = %s AND claimed > 0",
        (tenant.project_id, tenant.environment, reward_code),
    )


async def take_code(conn: Conn, tenant: Tenant, reward_code: str) -> str | None:
    """Hand the oldest available code of a pool to a claim; None when none is left.

    Codes other claims hold (locked, not yet committed) are skipped rather than waited
    for, so concurrent claims of one pool reward do not queue behind each other.
    """
    cursor = await conn.execute(
        """
        UPDATE reward_codes SET status = 'claimed'
        WHERE (project_id, environment, reward_code, code) = (
            SELECT project_id, environment, reward_code, code FROM reward_codes
            WHERE project_id = %s AND environment = %s AND reward_code = %s
              AND status = 'available'
            ORDER BY added_at, code LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING code
        """,
        (tenant.project_id, tenant.environment, reward_code),
    )
    row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def release_code(
    conn: Conn, tenant: Tenant, reward_code: str, code: str, *, void: bool
) -> None:
    """A cancelled claim's code: back to the pool (handed out again), or void (never)."""
    await conn.execute(
        "UPDATE reward_codes SET status = %s"
        " WHERE project_id = %s AND environment = %s AND reward_code = %s AND code = %s",
        ("void" if void else "available", tenant.project_id, tenant.environment, reward_code, code),
    )


# ---------------------------------------------------------------------------------------
# Claims


class ClaimRow(NamedTuple):
    """A claim as stored and shown."""

    claim_id: str
    participant_id: str
    reward_code: str
    cost: int
    code: str | None
    stock_taken: bool
    """Whether it counts against the reward's stock (given back when it is cancelled)."""
    status: str
    idempotency_key: str | None
    debit_entry_id: str | None
    refund_entry_id: str | None
    claimed_at: datetime
    cancelled_at: datetime | None
    code_action: str | None
    cancel_reason: str | None


_CLAIM = """claim_id, participant_id, reward_code, cost, code, stock_taken, status, idempotency_key,
    debit_entry_id, refund_entry_id, claimed_at, cancelled_at, code_action, cancel_reason"""


async def insert_claim(conn: Conn, tenant: Tenant, claim: ClaimRow) -> bool:
    """Record a claim; False when its idempotency key is taken (by a claim committed
    meanwhile: the participant lock does not cover a key used for someone else)."""
    cursor = await conn.execute(
        f"INSERT INTO reward_claims (project_id, environment, {_CLAIM})"  # noqa: S608 - constant column lists
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING claim_id",
        (tenant.project_id, tenant.environment, *claim),
    )
    return await cursor.fetchone() is not None


async def find_claim(
    conn: Conn, tenant: Tenant, *, claim_id: str | None = None, key: str | None = None
) -> ClaimRow | None:
    """A claim by its id or by its idempotency key."""
    cursor = await conn.execute(
        f"SELECT {_CLAIM} FROM reward_claims WHERE project_id = %s AND environment = %s"  # noqa: S608 - constant column lists
        " AND (claim_id = %s OR idempotency_key = %s)",
        (tenant.project_id, tenant.environment, claim_id, key),
    )
    row = await cursor.fetchone()
    return None if row is None else ClaimRow(*row)


async def mark_cancelled(
    conn: Conn,
    tenant: Tenant,
    claim_id: str,
    *,
    at: datetime,
    code_action: str | None,
    reason: str,
    refund_entry_id: str | None,
) -> ClaimRow:
    """Record a claim's cancellation; the claim as it now is."""
    cursor = await conn.execute(
        f"UPDATE reward_claims SET status = 'cancelled', cancelled_at = %s, code_action = %s,"  # noqa: S608 - constant column lists
        f" cancel_reason = %s, refund_entry_id = %s"
        f" WHERE project_id = %s AND environment = %s AND claim_id = %s RETURNING {_CLAIM}",
        (at, code_action, reason, refund_entry_id, tenant.project_id, tenant.environment, claim_id),
    )
    row = await cursor.fetchone()
    assert row is not None  # the caller read the claim under the participant's lock
    return ClaimRow(*row)


async def claims_per_reward(conn: Conn, tenant: Tenant, participant_id: str) -> dict[str, int]:
    """A participant's claims not cancelled, counted per reward (for claim limits)."""
    cursor = await conn.execute(
        "SELECT reward_code, count(*) FROM reward_claims WHERE project_id = %s"
        " AND environment = %s AND participant_id = %s AND status = 'claimed'"
        " GROUP BY reward_code",
        (tenant.project_id, tenant.environment, participant_id),
    )
    return {row[0]: int(row[1]) for row in await cursor.fetchall()}


async def list_claims(
    conn: Conn, tenant: Tenant, participant_id: str, *, after: str | None, limit: int
) -> list[ClaimRow]:
    """A participant's claims, newest first, after a cursor (a claim id)."""
    cursor = await conn.execute(
        f"SELECT {_CLAIM} FROM reward_claims WHERE project_id = %s AND environment = %s"  # noqa: S608 - constant column lists
        " AND participant_id = %s AND (%s::text IS NULL OR claim_id < %s)"
        " ORDER BY claim_id DESC LIMIT %s",
        (tenant.project_id, tenant.environment, participant_id, after, after, limit),
    )
    return [ClaimRow(*row) for row in await cursor.fetchall()]
