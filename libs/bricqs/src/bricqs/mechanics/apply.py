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
from collections.abc import Awaitable, Callable, Collection, Sequence

from bricqs.ids import ulid
from bricqs.mechanics.boosts import apply_boosts
from bricqs.mechanics.conditions import NOBODY, Participant
from bricqs.mechanics.definitions import points_expiry
from bricqs.mechanics.judging import judge_badges_and_challenges, plan_judging
from bricqs.mechanics.matching import match_facts
from bricqs.mechanics.rounds import Effects, Round
from bricqs.mechanics.ruleset import CompiledPointsRule, RuleSet, tier_level
from bricqs.mechanics.segments import participants_in_segments
from bricqs.mechanics.standings import finished_runs, keep_standings, utc_now
from bricqs.mechanics.streak_updates import update_streaks
from bricqs.mechanics.windows import period_key
from bricqs.schemas import Fact
from bricqs.storage.balances import apply_balance_changes
from bricqs.storage.events import insert_facts
from bricqs.storage.ledger import LedgerEntry, earned_in_cap_buckets, write_ledger
from bricqs.storage.participants import attributes_of
from bricqs.storage.progress import add_distinct_values, add_progress
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Conn, Tenant
from bricqs.storage.webhook_outbox import enqueue_outcomes

log = logging.getLogger("bricqs.mechanics")

MAX_CHAIN_DEPTH = 5
RuleSource = Callable[[Conn, Tenant], Awaitable[RuleSet]]


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
    # Grouped by a plain tuple, the Tenant made once per group: a Tenant per fact ran its
    # dataclass __init__, __hash__ and __eq__ as interpreted Python for every fact.
    by_tenant: dict[tuple[str, str], list[Fact]] = defaultdict(list)
    for fact in facts:
        by_tenant[(fact.project_id, fact.environment)].append(fact)
    for (project_id, environment), tenant_facts in by_tenant.items():
        tenant = Tenant(project_id, environment)
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
            outcome = Round(tenant, rules, effects, report, historical, participants=participants)
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


async def _run_round(conn: Conn, r: Round, facts: list[Fact]) -> None:
    matches = match_facts(r.rules, facts, r.participants)
    written = await add_progress(conn, r.tenant, matches.progress)
    await add_distinct_values(conn, r.tenant, matches.distinct)
    # Judging's plan and reads come before the streaks' work, which waits for PostgreSQL:
    # it runs the writes above and these reads while Python plans, not after.
    judging = await plan_judging(conn, r, matches.touched, written)
    await update_streaks(conn, r, matches.streak_hits)
    if judging is not None:
        await judge_badges_and_challenges(conn, r, judging)
    _earn_points(r, matches.earned)
    await _commit_points(conn, r)


# ---------------------------------------------------------------------------------------
# Points and tiers


def _earn_points(r: Round, earned: list[tuple[CompiledPointsRule, Fact, int]]) -> None:
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


async def _commit_points(conn: Conn, r: Round) -> None:
    if not r.ledger:
        return
    capped = await _apply_caps(conn, r)
    # Fresh: a round's entries (its earnings, judging's rewards) get new ulid() ids.
    inserted = set(await write_ledger(conn, r.tenant, [e for e, _ in capped], fresh=True))
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


async def _apply_caps(conn: Conn, r: Round) -> list[tuple[LedgerEntry, Fact]]:
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
                entry = entry.for_amount(room)
            used[key] = used.get(key, 0) + entry.amount
        kept.append((entry, fact))
    return kept


def _tier_changes(r: Round, fact: Fact, before: int, after: int) -> None:
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
