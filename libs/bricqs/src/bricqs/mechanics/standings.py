"""Leaderboard standings kept as points and criterion values change, and rebuilt from
PostgreSQL's source of truth (the ledger, criterion progress).

`keep_standings` runs in the storing transaction, for the facts that transaction inserted
(so a redelivery or replay changes nothing): it writes each touched participant's
absolute standing to `leaderboard_scores`, then mirrors it into Redis (see
`bricqs.storage.standings`) while the participants' locks are still held, so two writers
of one participant mirror in commit order.

Runs: a repeating board's run is its period (day, ISO week, month) in the board's zone,
numbered by the period's index (`windows.period_index`); an all-time board has run 0.
A fact counts toward the run its `occurred_at` falls in, unless that run had already
ended when the fact was processed: finished runs are final, late facts do not move them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, time
from typing import Any

from bricqs.ids import new_fact_id
from bricqs.mechanics.ruleset import LEADERBOARD_PERIODS, CompiledLeaderboard, RuleSet
from bricqs.mechanics.windows import period_index, period_key, period_start, zone
from bricqs.schemas import Fact
from bricqs.storage.events import insert_facts
from bricqs.storage.participants import participant_groups
from bricqs.storage.rankings import (
    ScoreRow,
    add_to_scores,
    built_boards,
    built_shape,
    criterion_ranking,
    finish_runs,
    lock_board,
    note_runs,
    points_ranking,
    regroup,
    replace_run,
    run_leaders,
    run_standings,
    set_scores,
)
from bricqs.storage.rankings import criterion_values as read_criterion_values
from bricqs.storage.standings import Push, RunKeys, Standing, Standings
from bricqs.storage.tenants import Conn, Tenant
from bricqs.storage.webhook_outbox import enqueue_outcomes

NO_GROUP = ""


def shape(board: CompiledLeaderboard) -> str:
    """A digest of what the standings depend on: a changed one needs a rebuild."""
    d = board.leaderboard
    criterion = board.criterion.criterion_id if board.criterion else ""
    text = "|".join((d.metric, criterion, d.period, d.timezone, d.group_by or ""))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def run_of(board: CompiledLeaderboard, moment: datetime) -> int:
    """The run `moment` falls in (0 for an all-time board)."""
    unit = LEADERBOARD_PERIODS.get(board.leaderboard.period)
    return period_index(moment, unit, board.leaderboard.timezone) if unit else 0


def run_bounds(board: CompiledLeaderboard, run: int) -> tuple[datetime | None, datetime | None]:
    """[start, end) of a run in UTC; (None, None) for an all-time board."""
    unit = LEADERBOARD_PERIODS.get(board.leaderboard.period)
    if unit is None:
        return None, None
    tz = zone(board.leaderboard.timezone)
    start = datetime.combine(period_start(run, unit), time(), tz)
    end = datetime.combine(period_start(run + 1, unit), time(), tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def _bucket(board: CompiledLeaderboard, run: int) -> str:
    unit = LEADERBOARD_PERIODS.get(board.leaderboard.period)
    if unit is None:
        return "all"
    start, _ = run_bounds(board, run)
    assert start is not None
    return period_key(start, unit, board.leaderboard.timezone)


def keys_of(tenant: Tenant, code: str, run: int) -> RunKeys:
    """The Redis keys of one run of a tenant's board."""
    return RunKeys.of(tenant.project_id, tenant.environment, code, run)


def points_earned(
    boards: Iterable[CompiledLeaderboard], facts: Sequence[Fact], now: datetime
) -> list[ScoreRow]:
    """The points `facts` add to points boards, per (board, run, participant), with the
    latest time they were earned; runs that had ended by `now` are left out (pure)."""
    added: dict[tuple[str, int, str], tuple[float, datetime]] = {}
    awarded = [f for f in facts if f.fact_type == "points.awarded"]
    for board in boards:
        if board.leaderboard.metric != "points":
            continue
        repeating = board.leaderboard.period != "all_time"
        current = run_of(board, now)
        for fact in awarded:
            amount = fact.properties.get("amount")
            if not isinstance(amount, int) or amount <= 0:
                continue
            run = run_of(board, fact.occurred_at) if repeating else 0
            if run < current:
                continue
            key = (board.leaderboard.code, run, fact.participant_id)
            total, at = added.get(key, (0.0, fact.occurred_at))
            added[key] = (total + amount, max(at, fact.occurred_at))
    return [ScoreRow(c, r, p, s, at) for (c, r, p), (s, at) in added.items()]


def criterion_touched(
    boards: Iterable[CompiledLeaderboard], facts: Sequence[Fact], now: datetime
) -> dict[tuple[str, int], set[str]]:
    """(board, run) -> participants whose criterion value `facts` may have changed, leaving
    out runs that had ended by `now` (pure)."""
    touched: dict[tuple[str, int], set[str]] = defaultdict(set)
    for board in boards:
        criterion = board.criterion
        if board.leaderboard.metric != "criterion" or criterion is None:
            continue
        current = run_of(board, now)
        for fact in facts:
            if fact.fact_type != criterion.fact_type:
                continue
            run = run_of(board, fact.occurred_at)
            if run >= current:
                touched[(board.leaderboard.code, run)].add(fact.participant_id)
    return touched


async def keep_standings(
    conn: Conn,
    standings: Standings | None,
    tenant: Tenant,
    rules: RuleSet,
    facts: Sequence[Fact],
    now: datetime,
) -> None:
    """Update the standings `facts` change (see the module's docstring).

    `standings` None keeps PostgreSQL only (the mirror then needs `rebuild`)."""
    boards = rules.leaderboards
    if not boards:
        return
    earned = points_earned(boards.values(), facts, now)
    touched = criterion_touched(boards.values(), facts, now)
    if not earned and not touched:
        return
    involved = {r.leaderboard for r in earned} | {code for code, _ in touched}
    built = await built_boards(conn, tenant, {c: shape(boards[c]) for c in involved})
    if not built:
        return
    earned = [r for r in earned if r.leaderboard in built]
    absolute: list[ScoreRow] = []
    for (code, run), pids in touched.items():
        board = boards[code]
        if code not in built or board.criterion is None:
            continue
        values = await read_criterion_values(
            conn,
            tenant,
            board.criterion.criterion_id,
            board.criterion.aggregate,
            _bucket(board, run),
            sorted(pids),
        )
        absolute.extend(ScoreRow(code, run, pid, value, at) for pid, value, at in values)
    groups = await _groups(conn, tenant, boards, [*earned, *absolute])
    rows = await add_to_scores(conn, tenant, [_in_group(r, groups) for r in earned])
    rows += await set_scores(conn, tenant, [_in_group(r, groups) for r in absolute])
    runs = sorted({(r.leaderboard, r.run) for r in rows})
    await note_runs(conn, tenant, [(c, r, *run_bounds(boards[c], r)) for c, r in runs])
    if standings is not None:
        await standings.push([_push(tenant, r) for r in rows])


def _in_group(row: ScoreRow, groups: dict[tuple[str, str], str]) -> ScoreRow:
    return row._replace(group=groups.get((row.leaderboard, row.participant_id), NO_GROUP))


def _push(tenant: Tenant, row: ScoreRow) -> Push:
    return Push(
        keys_of(tenant, row.leaderboard, row.run),
        row.group,
        Standing(row.participant_id, row.score, row.reached_at),
    )


async def _groups(
    conn: Conn, tenant: Tenant, boards: dict[str, CompiledLeaderboard], rows: Sequence[ScoreRow]
) -> dict[tuple[str, str], str]:
    """(board, participant) -> group, for the grouped boards among `rows`."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if (attribute := boards[row.leaderboard].leaderboard.group_by) is not None:
            wanted[attribute].add(row.participant_id)
    found: dict[tuple[str, str], str] = {}
    for attribute, pids in wanted.items():
        values = await participant_groups(conn, tenant, attribute, sorted(pids))
        for code, board in boards.items():
            if board.leaderboard.group_by == attribute:
                found.update(((code, pid), value) for pid, value in values.items())
    return found


async def source_standings(
    conn: Conn, tenant: Tenant, board: CompiledLeaderboard, run: int
) -> list[ScoreRow]:
    """A run's standings recomputed from the source of truth (the ledger or criterion
    progress, and the participants' groups now)."""
    code = board.leaderboard.code
    if board.leaderboard.metric == "points":
        since, until = run_bounds(board, run)
        ranking = [(p, float(s), r) for p, s, r in await points_ranking(conn, tenant, since, until)]
    else:
        assert board.criterion is not None
        ranking = await criterion_ranking(
            conn,
            tenant,
            board.criterion.criterion_id,
            _bucket(board, run),
            board.criterion.aggregate,
        )
    rows = [ScoreRow(code, run, pid, score, at) for pid, score, at in ranking]
    groups = await _groups(conn, tenant, {code: board}, rows)
    return [_in_group(r, groups) for r in rows]


async def rebuild(
    conn: Conn, standings: Standings, tenant: Tenant, board: CompiledLeaderboard, now: datetime
) -> int:
    """Rebuild the board's current run from the source of truth, in PostgreSQL and in
    Redis, under the board's lock; the number of participants ranked.

    Finished runs are final and kept as they are. Call inside a transaction."""
    code = board.leaderboard.code
    run = run_of(board, now)
    await lock_board(conn, tenant, code)
    rows = await source_standings(conn, tenant, board, run)
    await replace_run(conn, tenant, code, run, shape(board), rows)
    if rows:
        await note_runs(conn, tenant, [(code, run, *run_bounds(board, run))])
    return await _load(standings, tenant, board, run, rows)


async def reload(
    conn: Conn, standings: Standings, tenant: Tenant, board: CompiledLeaderboard, run: int
) -> int:
    """Reload one run's Redis mirror from PostgreSQL's standings, under the board's lock."""
    await lock_board(conn, tenant, board.leaderboard.code)
    rows = await run_standings(conn, tenant, board.leaderboard.code, run)
    return await _load(standings, tenant, board, run, rows)


async def _load(
    standings: Standings,
    tenant: Tenant,
    board: CompiledLeaderboard,
    run: int,
    rows: Sequence[ScoreRow],
) -> int:
    return await standings.load(
        keys_of(tenant, board.leaderboard.code, run),
        shape(board),
        ((r.group, Standing(r.participant_id, r.score, r.reached_at)) for r in rows),
    )


async def is_built(conn: Conn, tenant: Tenant, board: CompiledLeaderboard) -> bool:
    """Whether the board's standings are kept for its current definition (no lock taken:
    a reader that then rebuilds takes the board's lock exclusive, and holding it shared
    first could deadlock with another such reader)."""
    return await built_shape(conn, tenant, board.leaderboard.code) == shape(board)


async def move_to_group(
    conn: Conn,
    standings: Standings,
    tenant: Tenant,
    rules: RuleSet,
    participant_id: str,
    before: dict[str, str],
    after: dict[str, str],
    now: datetime,
) -> None:
    """Move a participant whose attributes changed from `before` to `after` (group values
    as text by attribute) to its new group on the current run of each board grouped by
    a changed attribute. The caller holds the participant's lock."""
    moved = {
        code: board
        for code, board in rules.leaderboards.items()
        if (a := board.leaderboard.group_by) is not None and before.get(a) != after.get(a)
    }
    if not moved:
        return
    built = await built_boards(conn, tenant, {c: shape(b) for c, b in moved.items()})
    changes = []
    for code in sorted(built):
        attribute = moved[code].leaderboard.group_by
        assert attribute is not None
        run = run_of(moved[code], now)
        old, new = before.get(attribute, NO_GROUP), after.get(attribute, NO_GROUP)
        changes.append((code, run, new))
        await standings.move(keys_of(tenant, code, run), participant_id, old, new)
    await regroup(conn, tenant, participant_id, changes)


# (project, environment, board) -> the run during which this process last looked for
# finished runs: one look per board and run boundary, not per batch.
_looked: dict[tuple[str, str, str], int] = {}


async def finished_runs(conn: Conn, tenant: Tenant, rules: RuleSet, now: datetime) -> list[Fact]:
    """`leaderboard.finished` facts for the leaders of each run of the tenant's repeating
    boards that ended before `now` and was not announced yet, stored and owed to the
    webhooks; the caller feeds them to the rules (to reward the winners).

    Runs end by the clock but are announced by the first processing for the tenant after
    the end (there is no scheduler); each once, whichever writer gets there first."""
    facts: list[Fact] = []
    for code, board in sorted(rules.leaderboards.items()):
        if board.leaderboard.period == "all_time":
            continue
        current = run_of(board, now)
        memo = (tenant.project_id, tenant.environment, code)
        if _looked.get(memo) == current:
            continue
        for run in await finish_runs(conn, tenant, code, current):
            _, ended = run_bounds(board, run)
            assert ended is not None
            top = board.leaderboard.finished_top
            for group, rank, pid, score, size in await run_leaders(conn, tenant, code, run, top):
                properties: dict[str, Any] = {
                    "leaderboard": code,
                    "run": run,
                    "rank": rank,
                    "score": int(score) if score == int(score) else score,
                    "participants": size,
                }
                if board.leaderboard.group_by is not None:
                    properties["group"] = group
                facts.append(
                    Fact(
                        fact_id=new_fact_id(),
                        fact_type="leaderboard.finished",
                        project_id=tenant.project_id,
                        environment=tenant.environment,
                        participant_id=pid,
                        event_id=f"lbr_{code}_{run}",
                        properties=properties,
                        occurred_at=ended,
                    )
                )
        _looked[memo] = current
    if facts:
        await insert_facts(conn, facts)
        await enqueue_outcomes(conn, tenant, facts)
    return facts


def forget_finished_look(tenant: Tenant) -> None:
    """Look again for the tenant's finished runs next time (a look rolled back)."""
    for memo in [m for m in _looked if m[:2] == (tenant.project_id, tenant.environment)]:
        del _looked[memo]


def utc_now() -> datetime:
    """The processing clock: which runs have ended is judged against it."""
    return datetime.now(UTC)
