"""Restoring a participant's broken streak by hand (docs/economy.md, "Streak freezes")."""

from __future__ import annotations

from datetime import datetime

from bricqs.mechanics.definitions import Streak
from bricqs.mechanics.streak_runs import (
    deadline_after,
    moment_index,
    period_label,
    to_restore,
    walk,
)
from bricqs.storage.locks import lock_participants
from bricqs.storage.streaks import (
    add_bridged_periods,
    read_streak_periods,
    read_streak_states,
    save_streak_states,
)
from bricqs.storage.tenants import Conn, Tenant


class StreakNotStarted(Exception):
    """The participant was never active for this streak: there is nothing to restore."""


async def restore_streak(
    conn: Conn, tenant: Tenant, streak: Streak, participant_id: str, now: datetime
) -> list[str]:
    """Bridge the periods missed at the participant's latest break, so the run goes on
    as if they had been kept (and is judged again from the current period); the start
    dates of the periods bridged, none when there was no break since the last restore.
    Call inside a transaction."""
    await lock_participants(conn, [(tenant.project_id, tenant.environment, participant_id)])
    state = (await read_streak_states(conn, tenant, participant_id)).get(streak.code)
    pair = (streak.code, participant_id)
    periods, bridges = await read_streak_periods(conn, tenant, [pair])
    active = periods.get(pair)
    if state is None or not active:
        raise StreakNotStarted(streak.code)
    timezone = state[3]
    bridged = bridges.get(pair, [])
    ended = moment_index(streak, now, timezone) - 1
    missed = to_restore(active, bridged, ended, streak)
    if not missed:
        return []
    await add_bridged_periods(conn, tenant, streak.code, participant_id, missed)
    result = walk(active, [*bridged, *missed], ended, streak)
    last = result.runs[-1]
    deadline = deadline_after(tenant, streak, participant_id, timezone, result)
    await save_streak_states(
        conn,
        tenant,
        [(streak.code, participant_id, last.last, last.length, result.longest, timezone)],
        deadlines={pair: deadline} if deadline else None,
    )
    return [period_label(streak, index) for index in missed]
