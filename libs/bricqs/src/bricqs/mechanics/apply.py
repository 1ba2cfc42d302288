"""Applying a tenant's mechanics to newly stored facts, inside the storing transaction.

Called by the processor (per batch) and the sync endpoint (per event) right after
`store_events`, only for facts that transaction inserted, so redeliveries never count
twice. Work is done in rounds: the facts of a round update criteria, points, streaks,
badges, challenges and tiers, with a fixed number of statements whatever the number of
facts; the outcomes become system facts (`points.awarded`, `badge.awarded`,
`challenge.completed`, `streak.extended`, `tier.changed`) that form the next round,
up to MAX_CHAIN_DEPTH rounds, so a cycle of rules cannot loop.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bricqs.facts import HISTORICAL_MARK
from bricqs.ids import new_fact_id, ulid
from bricqs.mechanics.boosts import apply_boosts
from bricqs.mechanics.conditions import NOBODY, Participant
from bricqs.mechanics.definitions import Streak, points_expiry
from bricqs.mechanics.evaluation import (
    EvaluationPoint,
    bucket_ranges,
    current_point,
    evaluation_points,
    values_at,
)
from bricqs.mechanics.matching import match_facts
from bricqs.mechanics.ruleset import (
    CompiledBadge,
    CompiledChallenge,
    CompiledCriterion,
    CompiledPointsRule,
    CompiledStreak,
    RuleSet,
    tier_level,
)
from bricqs.mechanics.segments import participants_in_segments
from bricqs.mechanics.standings import finished_runs, keep_standings, utc_now
from bricqs.mechanics.streak_runs import deadline_after, moment_index, walk
from bricqs.mechanics.windows import period_key
from bricqs.schemas import Fact
from bricqs.storage.awards import award_badges, complete_challenges
from bricqs.storage.balances import apply_balance_changes
from bricqs.storage.events import insert_facts
from bricqs.storage.ledger import LedgerEntry, earned_in_cap_buckets, write_ledger
from bricqs.storage.participants import attributes_of, participant_timezones
from bricqs.storage.progress import (
    BucketReads,
    WrittenBuckets,
    add_distinct_values,
    add_progress,
    send_bucket_reads,
)
from bricqs.storage.standings import Standings
from bricqs.storage.streaks import (
    Deadline,
    add_streak_periods,
    read_streak_periods,
    save_streak_states,
    watch_deadlines,
)
from bricqs.storage.tenants import Conn, Tenant
from bricqs.storage.webhook_outbox import enqueue_outcomes

log = logging.getLogger("bricqs.mechanics")

MAX_CHAIN_DEPTH = 5
RuleSource = Callable[[Conn, Tenant], Awaitable[RuleSet]]


@dataclass
class Effects:
    """What one event caused, for the sync endpoint's answer."""

    points: list[dict[str, Any]] = field(default_factory=list)
    badges: list[dict[str, Any]] = field(default_factory=list)
    challenges: list[dict[str, Any]] = field(default_factory=list)
    streaks: list[dict[str, Any]] = field(default_factory=list)
    tiers: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[dict[str, Any]]]:
        """The JSON form; kinds with nothing to say are left out."""
        return {k: v for k, v in vars(self).items() if v}


# The effects list each system fact appears in (challenge progress is described apart).
_EFFECT_KINDS = {
    "points.awarded": "points",
    "badge.awarded": "badges",
    "streak.extended": "streaks",
    "tier.changed": "tiers",
}


@dataclass
class _Round:
    """The outcomes of one round, per tenant."""

    tenant: Tenant
    rules: RuleSet
    effects: dict[str, Effects]
    report: bool
    """Whether to fill `effects` (only the sync endpoint answers with them)."""
    historical: Collection[str] = ()
    """Ids of the events sent as a historical import: their outcomes carry the mark."""
    system_facts: list[Fact] = field(default_factory=list)
    ledger: list[tuple[LedgerEntry, Fact]] = field(default_factory=list)
    participants: Mapping[str, Participant] = field(default_factory=dict)
    """The batch's participants, for rules that read their attributes or segments."""

    def effects_of(self, fact: Fact) -> Effects:
        return self.effects.setdefault(fact.event_id, Effects())

    def emit(self, source: Fact, fact_type: str, properties: dict[str, Any]) -> None:
        """Record an outcome of `source` as a system fact (and as an effect of its event,
        when reporting)."""
        if self.report and (kind := _EFFECT_KINDS.get(fact_type)):
            getattr(self.effects_of(source), kind).append(properties)
        if source.event_id in self.historical:  # a chain's facts all keep the event's id
            properties = {**properties, HISTORICAL_MARK: True}
        self.system_facts.append(
            Fact(
                fact_id=new_fact_id(),
                fact_type=fact_type,
                project_id=source.project_id,
                environment=source.environment,
                participant_id=source.participant_id,
                event_id=source.event_id,
                properties=properties,
                occurred_at=source.occurred_at,
            )
        )


async def apply_mechanics(
    conn: Conn,
    rules_for: RuleSource,
    facts: Sequence[Fact],
    *,
    report: bool = True,
    standings: Standings | None = None,
    notify: bool = True,
    historical: Collection[str] = (),
) -> dict[str, Effects]:
    """Run every tenant's mechanics for `facts` (newly inserted); effects by event id.
    `historical`: ids of the events sent as a historical import, whose outcomes are marked
    (`facts.HISTORICAL_MARK`) and so owe no webhook.

    `notify=False` records the outcomes without owing webhook messages (a quiet backfill).

    The caller holds the participants' locks (`storage.locks.lock_participants`) for the whole
    transaction, taken before the facts were stored.
    """
    effects: dict[str, Effects] = {}
    by_tenant: dict[Tenant, list[Fact]] = defaultdict(list)
    for fact in facts:
        by_tenant[Tenant(fact.project_id, fact.environment)].append(fact)
    for tenant, tenant_facts in by_tenant.items():
        rules = await rules_for(conn, tenant)
        current = [*tenant_facts, *await finished_runs(conn, tenant, rules, utc_now())]
        participants = await _participants(conn, tenant, rules, current)
        outcomes: list[Fact] = []
        for depth in range(MAX_CHAIN_DEPTH + 1):
            current = [f for f in current if not rules.is_empty_for(f.fact_type)]
            if not current:
                break
            if depth == MAX_CHAIN_DEPTH:
                log.warning("mechanics chain cut at depth %d for %s", depth, tenant)
                break
            outcome = _Round(tenant, rules, effects, report, historical, participants=participants)
            await _run_round(conn, outcome, current)
            if outcome.system_facts:
                await insert_facts(conn, outcome.system_facts, fresh=True)
                outcomes.extend(outcome.system_facts)
            current = outcome.system_facts
        # The webhooks owed for the outcomes, once per tenant, in the storing transaction.
        if notify:
            await enqueue_outcomes(conn, tenant, outcomes)
        await keep_standings(conn, standings, tenant, rules, [*tenant_facts, *outcomes], utc_now())
    return effects


async def _run_round(conn: Conn, r: _Round, facts: list[Fact]) -> None:
    matches = match_facts(r.rules, facts, r.participants)
    written = await add_progress(conn, r.tenant, matches.progress)
    await add_distinct_values(conn, r.tenant, matches.distinct)
    # Judging's plan and reads come before the streaks' work, which waits for PostgreSQL:
    # it runs the writes above and these reads while Python plans, not after.
    judging = await _plan_judging(conn, r, matches.touched, written)
    await _update_streaks(conn, r, matches.streak_hits)
    if judging is not None:
        await _judge_badges_and_challenges(conn, r, judging)
    _earn_points(r, matches.earned)
    await _commit_points(conn, r)


# ---------------------------------------------------------------------------------------
# Streaks


async def _update_streaks(
    conn: Conn, r: _Round, matched: list[tuple[CompiledStreak, Fact]]
) -> None:
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
    new = await add_streak_periods(conn, r.tenant, list(periods))
    if not new:
        return
    pairs = sorted({(code, pid) for code, pid, _ in new})
    all_periods, bridged = await read_streak_periods(conn, r.tenant, pairs)
    # Periods after the latest active one are judged by the scheduler when they end, not
    # here: what a fact changes must not depend on when it is processed.
    walks = {
        pair: walk(active, bridged.get(pair, ()), active[-1], definitions[pair[0]])
        for pair, active in all_periods.items()
    }
    states = []
    deadlines = []
    # Runs whose new periods all come from a historical import.
    live = {(c, p) for c, p, i in new if periods[(c, p, i)].event_id not in r.historical}
    imported = {(c, p) for c, p, _ in new} - live
    for code, pid in pairs:
        result, tz = walks[(code, pid)], timezone_of[(code, pid)]
        last = result.runs[-1]
        states.append((code, pid, last.last, last.length, result.longest, tz))
        deadline = deadline_after(r.tenant, definitions[code], pid, tz, result)
        if deadline is not None and (code, pid) in imported:
            deadline = _quiet_for_the_past(deadline)
        if deadline is not None:
            deadlines.append(deadline)
    await save_streak_states(conn, r.tenant, states)
    await watch_deadlines(conn, deadlines)
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


# ---------------------------------------------------------------------------------------
# Badges and challenges


def _latest(facts: list[Fact]) -> Fact:
    """The fact an award is credited to: the latest of those that led to it."""
    return max(facts, key=lambda f: (f.occurred_at, f.fact_id))


@dataclass
class _Judging:
    """The badges and challenges a round judges, the points each is judged at, and the
    reads of the buckets that needs, sent."""

    badges: dict[tuple[str, str], tuple[CompiledBadge, list[Fact]]]
    challenges: dict[tuple[str, str], tuple[CompiledChallenge, list[Fact]]]
    badge_points: dict[tuple[str, str], list[list[EvaluationPoint]]]
    challenge_points: dict[tuple[str, str], tuple[list[EvaluationPoint], EvaluationPoint]]
    plan: list[tuple[CompiledCriterion, str, list[EvaluationPoint]]]
    reads: BucketReads
    written: WrittenBuckets


async def _plan_judging(
    conn: Conn,
    r: _Round,
    touched: dict[tuple[str, str], list[Fact]],
    written: WrittenBuckets,
) -> _Judging | None:
    """What judging the badges and challenges whose criteria `touched` moved takes, its
    reads sent (None: nothing to judge); `written`: the buckets this round just wrote, as
    they are now (not read again)."""
    badges: dict[tuple[str, str], tuple[CompiledBadge, list[Fact]]] = {}
    challenges: dict[tuple[str, str], tuple[CompiledChallenge, list[Fact]]] = {}
    for (pid, cid), facts in touched.items():
        for badge in r.rules.badges_by_criterion.get(cid, ()):
            badges.setdefault((pid, badge.badge.code), (badge, []))[1].extend(facts)
        for challenge in r.rules.challenges_by_criterion.get(cid, ()):
            challenges.setdefault((pid, challenge.challenge.code), (challenge, []))[1].extend(facts)
    if not badges and not challenges:
        return None

    # The points each (criterion, participant) is judged at, from every badge and
    # challenge using it: their buckets are read in two queries, then valued together.
    wanted: dict[tuple[str, str], tuple[CompiledCriterion, list[list[EvaluationPoint]]]] = {}

    def judged_at(
        criterion: CompiledCriterion, pid: str, points: list[EvaluationPoint]
    ) -> list[EvaluationPoint]:
        entry = wanted.get((criterion.criterion_id, pid))
        if entry is None:
            wanted[(criterion.criterion_id, pid)] = (criterion, [points])
        else:
            entry[1].append(points)
        return points

    badge_points: dict[tuple[str, str], list[list[EvaluationPoint]]] = {}
    for (pid, code), (badge, facts) in badges.items():
        times = [f.occurred_at for f in facts]
        badge_points[(pid, code)] = [
            judged_at(t.criterion, pid, evaluation_points(t.criterion.window, times))
            for t in badge.thresholds
        ]
    challenge_points: dict[tuple[str, str], tuple[list[EvaluationPoint], EvaluationPoint]] = {}
    for (pid, code), (challenge, facts) in challenges.items():
        times = [f.occurred_at for f in facts]
        window = challenge.challenge.window
        points = evaluation_points(window, times)
        # Progress as of the latest fact is read only to be reported in the effects.
        now_point = current_point(window, max(times))
        read = [*points, now_point] if r.report else points
        for objective in challenge.objectives:
            judged_at(objective.criterion, pid, read)
        challenge_points[(pid, code)] = (points, now_point)

    # Most (criterion, participant) pairs are judged for one badge or challenge: their one
    # list has no repeats (evaluation_points makes none), so it is taken as it is.
    plan = [
        (
            criterion,
            pid,
            lists[0]
            if len(lists) == 1
            else list({p.label: p for points in lists for p in points}.values()),
        )
        for (_, pid), (criterion, lists) in wanted.items()
    ]
    # A point of one bucket (the whole history, a calendar period) is most often the very
    # bucket the round wrote; only the others, and rolling windows' days, are read.
    known = written.keys
    ranges, distinct_ranges = bucket_ranges(
        entry for entry in plan if not _written_alone(entry, known)
    )
    unread = [
        g
        for g in ranges
        if g.first != g.last or (g.criterion_id, g.participant_id, g.first) not in known
    ]
    reads = await send_bucket_reads(conn, r.tenant, unread, distinct_ranges)
    return _Judging(badges, challenges, badge_points, challenge_points, plan, reads, written)


def _written_alone(
    entry: tuple[CompiledCriterion, str, list[EvaluationPoint]], written: Collection[object]
) -> bool:
    """Whether judging `entry` needs exactly one bucket, one this round wrote (so nothing
    to read). Most entries are this, and skipping them before `bucket_ranges` spares it
    a range each."""
    criterion, pid, points = entry
    if len(points) != 1 or criterion.aggregate == "distinct":
        return False
    point = points[0]
    return point.first == point.last and (criterion.criterion_id, pid, point.first) in written


async def _judge_badges_and_challenges(conn: Conn, r: _Round, judging: _Judging) -> None:
    """Award the badges and complete the challenges `judging` planned."""
    badges, challenges, plan = judging.badges, judging.challenges, judging.plan
    badge_points, challenge_points = judging.badge_points, judging.challenge_points
    progress, distinct = await judging.reads.values()
    progress.update(await judging.written.values())
    values = {
        (criterion.criterion_id, pid): values_at(criterion, pid, points, progress, distinct)
        for criterion, pid, points in plan
    }

    def reached(
        criterion: CompiledCriterion, pid: str, points: list[EvaluationPoint], at_least: float
    ) -> bool:
        found = values[(criterion.criterion_id, pid)]
        if len(points) == 1:  # the whole history or one period: most judgements
            return found[points[0].label] >= at_least
        return any(found[p.label] >= at_least for p in points)

    awards: list[tuple[str, str, str, str, str | None]] = []
    award_facts: dict[tuple[str, str, str], Fact] = {}
    for (pid, code), (badge, facts) in badges.items():
        thresholds = list(zip(badge.thresholds, badge_points[(pid, code)], strict=True))
        met = [reached(t.criterion, pid, points, t.threshold) for t, points in thresholds]
        period = badge.period_window
        if period is None:
            if all(met) if badge.badge.combine == "all" else any(met):
                latest = _latest(facts)
                awards.append((code, pid, "once", "criteria", latest.fact_id))
                award_facts[(code, pid, "once")] = latest
            continue
        # Repeatable: once per calendar period in which the criteria are met.
        for point in evaluation_points(period, [f.occurred_at for f in facts]):
            met_here = [
                reached(
                    t.criterion,
                    pid,
                    [point] if t.criterion.window == period else points,
                    t.threshold,
                )
                for t, points in thresholds
            ]
            if all(met_here) if badge.badge.combine == "all" else any(met_here):
                latest = _latest(facts)
                awards.append((code, pid, point.label, "criteria", latest.fact_id))
                award_facts[(code, pid, point.label)] = latest

    completions: list[tuple[str, str, str | None]] = []
    completion_facts: dict[tuple[str, str], Fact] = {}
    for (pid, code), (challenge, facts) in challenges.items():
        points, now_point = challenge_points[(pid, code)]
        done = any(
            all(reached(o.criterion, pid, [p], o.target) for o in challenge.objectives)
            for p in points
        )
        latest = _latest(facts)
        if r.report:
            r.effects_of(latest).challenges.append(
                {
                    "challenge": code,
                    "objectives": [
                        {
                            "code": o.code,
                            "value": values[(o.criterion.criterion_id, pid)][now_point.label],
                            "target": o.target,
                        }
                        for o in challenge.objectives
                    ],
                    "completed": done,
                }
            )
        if done:
            completions.append((code, pid, latest.fact_id))
            completion_facts[(code, pid)] = latest

    for code, pid in await complete_challenges(conn, r.tenant, completions):
        fact = completion_facts[(code, pid)]
        r.emit(fact, "challenge.completed", {"challenge": code})
        reward = r.rules.challenges[code].challenge.reward
        if reward is None:
            continue
        if reward.points:
            r.ledger.append(
                (
                    LedgerEntry(
                        entry_id="pts_" + ulid(),
                        participant_id=pid,
                        amount=reward.points,
                        kind="reward",
                        source=f"challenge:{code}",
                        fact_id=fact.fact_id,
                        cap_bucket=None,
                        occurred_at=fact.occurred_at,
                        reason=f"challenge {code}",
                    ),
                    fact,
                )
            )
        if reward.badge:
            awards.append((reward.badge, pid, "once", f"challenge:{code}", fact.fact_id))
            award_facts[(reward.badge, pid, "once")] = fact

    for code, pid, award_key in await award_badges(conn, r.tenant, awards):
        fact = award_facts[(code, pid, award_key)]
        properties = {"badge": code, "award_key": award_key}
        r.emit(fact, "badge.awarded", properties)


# ---------------------------------------------------------------------------------------
# Points and tiers


def _earn_points(r: _Round, earned: list[tuple[CompiledPointsRule, Fact, int]]) -> None:
    for rule, fact, base in earned:
        cap = rule.rule.cap
        amount, boosts = base, None
        if r.rules.boosts:
            who = r.participants.get(fact.participant_id, NOBODY)
            amount, boosts = apply_boosts(r.rules.boosts, rule.rule.code, fact, who, base)
            if amount <= 0:
                continue  # a boost below 1 rounded the award away
        r.ledger.append(
            (
                LedgerEntry(
                    entry_id="pts_" + ulid(),
                    participant_id=fact.participant_id,
                    amount=amount,
                    kind="earn",
                    source=f"rule:{rule.rule.code}",
                    fact_id=fact.fact_id,
                    cap_bucket=period_key(fact.occurred_at, cap.period) if cap else None,
                    occurred_at=fact.occurred_at,
                    expires_at=points_expiry(rule.rule, fact.occurred_at),
                    boosts=boosts,
                ),
                fact,
            )
        )


async def _commit_points(conn: Conn, r: _Round) -> None:
    if not r.ledger:
        return
    capped = await _apply_caps(conn, r)
    inserted = set(await write_ledger(conn, r.tenant, [e for e, _ in capped]))
    entries = [(e, f) for e, f in capped if e.entry_id in inserted]
    earned: dict[str, int] = defaultdict(int)
    for entry, _ in entries:
        earned[entry.participant_id] += entry.amount
    balances = await apply_balance_changes(
        conn, r.tenant, {pid: (amount, 0) for pid, amount in earned.items()}
    )
    for entry, fact in entries:
        rule = entry.source.removeprefix("rule:") if entry.source.startswith("rule:") else None
        properties = {
            "amount": entry.amount,
            "source": entry.source,
            "rule": rule,
            "balance": balances[entry.participant_id][0],
        }
        if entry.expires_at is not None:
            properties["expires_at"] = entry.expires_at.isoformat()
        if entry.boosts:
            properties["boosts"] = entry.boosts
        r.emit(fact, "points.awarded", properties)
    last_fact = {entry.participant_id: fact for entry, fact in entries}
    for pid, (_, total_after) in balances.items():
        _tier_changes(r, last_fact[pid], total_after - earned[pid], total_after)


async def _apply_caps(conn: Conn, r: _Round) -> list[tuple[LedgerEntry, Fact]]:
    """Trim earn entries so no rule pays more than its cap per participant and period."""
    caps = {
        f"rule:{rule.rule.code}": rule.rule.cap
        for rules in r.rules.points_by_type.values()
        for rule in rules
        if rule.rule.cap is not None
    }
    keys = [
        (e.source, e.participant_id, e.cap_bucket)
        for e, _ in r.ledger
        if e.source in caps and e.cap_bucket is not None
    ]
    used = await earned_in_cap_buckets(conn, r.tenant, keys)
    kept = []
    for entry, fact in r.ledger:
        cap = caps.get(entry.source)
        if cap is not None and entry.cap_bucket is not None:
            key = (entry.source, entry.participant_id, entry.cap_bucket)
            room = cap.amount - used.get(key, 0)
            if room <= 0:
                continue
            if entry.amount > room:
                entry = entry._replace(amount=room)
            used[key] = used.get(key, 0) + entry.amount
        kept.append((entry, fact))
    return kept


def _tier_changes(r: _Round, fact: Fact, before: int, after: int) -> None:
    for tier in r.rules.tiers:
        old, _ = tier_level(tier, before)
        new, _ = tier_level(tier, after)
        if old != new:
            properties = {
                "tier": tier.code,
                "from": tier.levels[old].code,
                "to": tier.levels[new].code,
            }
            r.emit(fact, "tier.changed", properties)


# ---------------------------------------------------------------------------------------
# Participants


async def _participants(
    conn: Conn, tenant: Tenant, rules: RuleSet, facts: list[Fact]
) -> dict[str, Participant]:
    """The facts' participants with their attributes and segments, read once per batch,
    as they are now (attributes have no history), and only when a rule reads them."""
    if not rules.reads_participants:
        return {}
    ids = sorted({f.participant_id for f in facts})
    return participants_in_segments(rules.segments, await attributes_of(conn, tenant, ids))
