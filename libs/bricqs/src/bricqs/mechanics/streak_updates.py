"""What a round's streak hits do: the periods they fill, the runs and deadlines that
follow, and a `streak.extended` outcome for each new period."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bricqs.mechanics.definitions import Streak
from bricqs.mechanics.rounds import Round
from bricqs.mechanics.ruleset import CompiledStreak
from bricqs.mechanics.standings import utc_now
from bricqs.mechanics.streak_runs import Walk, deadline_after, moment_index, walk
from bricqs.schemas import Fact
from bricqs.storage.participants import participant_timezones
from bricqs.storage.streaks import (
    Deadline,
    read_streak_periods,
    save_streak_states,
)
from bricqs.storage.tenants import Conn


async def update_streaks(conn: Conn, r: Round, matched: list[tuple[CompiledStreak, Fact]]) -> None:
    """Record the periods `matched` hits fill; for the streaks that gained one, save the
    runs' state and next deadline, and emit `streak.extended` per new period."""
    if not matched:
        return
    needs_zone = sorted(
        {f.participant_id for s, f in matched if s.streak.timezone == "participant"}
    )
    zones = await participant_timezones(conn, r.tenant, needs_zone) if needs_zone else {}
    periods: dict[tuple[str, str, int], Fact] = {}
    timezone_of: dict[tuple[str, str], str] = {}
    definitions: dict[str, Streak] = {}
    for streak, fact in matched:
        definition = streak.streak
        tz = definition.timezone
        if tz == "participant":
            tz = _valid_zone(zones.get(fact.participant_id))
        # Grace hours move the period boundary later: activity at 00:30 with 1 h of
        # grace still counts for the day before. Order-independent by construction.
        key = (definition.code, fact.participant_id, moment_index(definition, fact.occurred_at, tz))
        periods.setdefault(key, fact)
        timezone_of[(definition.code, fact.participant_id)] = tz
        definitions[definition.code] = definition
    # The pairs' periods as stored: the participants' locks, held by every writer until
    # its commit, keep them so until this round writes (storage.locks).
    stored, bridged = await read_streak_periods(conn, r.tenant, list(timezone_of))
    known = {pair: set(active) for pair, active in stored.items()}
    new = sorted(key for key in periods if key[2] not in known.get((key[0], key[1]), ()))
    if not new:
        return
    added: dict[tuple[str, str], list[int]] = {}
    for code, pid, index in new:
        added.setdefault((code, pid), []).append(index)
    # Periods after the latest active one are judged by the scheduler when they end, not
    # here: what a fact changes must not depend on when it is processed.
    walks: dict[tuple[str, str], Walk] = {}
    for pair, indices in added.items():
        active = sorted(known.get(pair, set()).union(indices))
        walks[pair] = walk(active, bridged.get(pair, ()), active[-1], definitions[pair[0]])
    states = []
    deadlines: dict[tuple[str, str], Deadline] = {}
    # Runs whose new periods all come from a historical import.
    live = {(c, p) for c, p, i in new if periods[(c, p, i)].event_id not in r.historical}
    imported = set(added) - live
    for code, pid in added:
        result, tz = walks[(code, pid)], timezone_of[(code, pid)]
        last = result.runs[-1]
        states.append((code, pid, last.last, last.length, result.longest, tz))
        deadline = deadline_after(r.tenant, definitions[code], pid, tz, result)
        if deadline is not None and (code, pid) in imported:
            deadline = _quiet_for_the_past(deadline)
        if deadline is not None:
            deadlines[(code, pid)] = deadline
    await save_streak_states(conn, r.tenant, states, added, deadlines)
    for code, pid, index in new:
        result = walks[(code, pid)]
        properties = {"streak": code, "length": result.length_at(index), "longest": result.longest}
        r.emit(periods[(code, pid, index)], "streak.extended", properties)


def _quiet_for_the_past(deadline: Deadline) -> Deadline | None:
    """A deadline set by imported activity alone (docs/import.md): what is already past
    when the import is processed is not announced by the clock (no `streak.lost` or
    `streak.at_risk` for periods long gone); what is still ahead is, as for live activity.
    The streak's state does not depend on it (reads judge the runs themselves)."""
    now = utc_now()
    if deadline.ends_at <= now:
        return None
    if deadline.at_risk_at is not None and deadline.at_risk_at <= now:
        return deadline._replace(at_risk_at=None)
    return deadline


def _valid_zone(name: str | None) -> str:
    """The participant's zone when it is a real IANA zone, else UTC."""
    if not name:
        return "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return name
