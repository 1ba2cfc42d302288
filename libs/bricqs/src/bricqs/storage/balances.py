"""Points balances: each participant's balance and running totals."""

from __future__ import annotations

from bricqs.storage.arrays import TEXTS, integers, integers_sql, texts
from bricqs.storage.tenants import Conn, Tenant

_ADD_TO_BALANCES = f"""
    INSERT INTO points_balances AS b (project_id, environment, participant_id, balance,
        total_earned, total_spent)
    SELECT %s, %s, pid, GREATEST(earned - spent, 0), earned, spent
    FROM unnest({TEXTS}, {integers_sql("int8")}, {integers_sql("int8")}) AS t(pid, earned, spent)
    ON CONFLICT (project_id, environment, participant_id) DO UPDATE SET
        -- From the totals, not EXCLUDED.balance: the proposed row is clamped at 0
        -- because PostgreSQL checks the CHECK on it before it finds the conflict.
        balance = b.balance + EXCLUDED.total_earned - EXCLUDED.total_spent,
        total_earned = b.total_earned + EXCLUDED.total_earned,
        total_spent = b.total_spent + EXCLUDED.total_spent,
        updated_at = now()
    RETURNING participant_id, balance, total_earned
"""  # noqa: S608 - fixed SQL fragments, never input


async def apply_balance_changes(
    conn: Conn, tenant: Tenant, changes: dict[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """Add (earned, spent) per participant; return each one's new (balance, total_earned).

    The balance CHECK (>= 0) makes an overdraft fail the statement; callers that spend
    check first under the participant lock.
    """
    if not changes:
        return {}
    participants = sorted(changes)
    cursor = await conn.execute(
        _ADD_TO_BALANCES,
        (
            tenant.project_id,
            tenant.environment,
            *texts(participants),
            integers([changes[p][0] for p in participants]),
            integers([changes[p][1] for p in participants]),
        ),
    )
    return {r[0]: (int(r[1]), int(r[2])) for r in await cursor.fetchall()}


async def read_balance(conn: Conn, tenant: Tenant, participant_id: str) -> tuple[int, int, int]:
    """(balance, total_earned, total_spent) of a participant (zeros when none)."""
    cursor = await conn.execute(
        "SELECT balance, total_earned, total_spent FROM points_balances"
        " WHERE project_id = %s AND environment = %s AND participant_id = %s",
        (tenant.project_id, tenant.environment, participant_id),
    )
    row = await cursor.fetchone()
    return (0, 0, 0) if row is None else (int(row[0]), int(row[1]), int(row[2]))


async def write_off_balances(conn: Conn, tenant: Tenant, expired: dict[str, int]) -> dict[str, int]:
    """Take expired points off balances (lifetime earned stays); each one's new balance."""
    if not expired:
        return {}
    participants = sorted(expired)
    cursor = await conn.execute(
        "UPDATE points_balances b SET balance = b.balance - x.amount,"
        " total_expired = b.total_expired + x.amount, updated_at = now()"
        " FROM unnest(%b::text[], %b::bigint[]) AS x(pid, amount)"
        " WHERE b.project_id = %b AND b.environment = %b AND b.participant_id = x.pid"
        " RETURNING b.participant_id, b.balance",
        (participants, [expired[p] for p in participants], tenant.project_id, tenant.environment),
    )
    return {r[0]: int(r[1]) for r in await cursor.fetchall()}
