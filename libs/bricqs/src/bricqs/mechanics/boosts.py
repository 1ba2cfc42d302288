"""Boosts: time-windowed multipliers of earn rules' points (pure).

A fact is boosted by the boosts active at its `occurred_at` (not at processing time), so a
replay or a late event earns what it would have earned on time. Overlapping boosts
multiply; the product of the rule's points and every multiplier is rounded once.

Only the facts of events are boosted, not outcomes (`badge.awarded`…): an outcome takes
the time of the fact it is credited to, the latest of those its batch held, so it would be
boosted or not depending on how events were batched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bricqs.facts import CUSTOM_FACT_PREFIX
from bricqs.mechanics.conditions import Participant
from bricqs.mechanics.definitions import Boost
from bricqs.schemas import Fact

# When boosts that apply together round differently, the least generous rounding wins,
# so stacking a boost never rounds an award up that would otherwise be rounded down.
_LEAST_GENEROUS_FIRST = ("floor", "round", "ceil")


@dataclass(frozen=True)
class CompiledBoost:
    """A boost with its participant list and rule codes as sets, and its ledger record."""

    boost: Boost
    participants: frozenset[str]
    rules: frozenset[str] | None
    record: list[dict[str, Any]]
    """The boost alone as the ledger records it (shared: never mutated)."""

    @classmethod
    def build(cls, boost: Boost) -> CompiledBoost:
        """Compile `boost`."""
        rules = None if boost.rules is None else frozenset(boost.rules)
        record = [{"code": boost.code, "multiplier": boost.multiplier}]
        return cls(boost, frozenset(boost.participants), rules, record)

    def applies(self, rule_code: str, fact: Fact, who: Participant) -> bool:
        """Whether this boost multiplies what `rule_code` earns for `fact`."""
        boost = self.boost
        if not boost.starts_at <= fact.occurred_at < boost.ends_at:
            return False
        if not fact.fact_type.startswith(CUSTOM_FACT_PREFIX):
            return False
        if self.rules is not None and rule_code not in self.rules:
            return False
        if boost.scope == "segment":
            return boost.segment in who.segments
        if boost.scope == "participants":
            return fact.participant_id in self.participants
        return True


def round_points(raw: float, how: str) -> int:
    """`raw` points as a whole number, never negative ("round": halves to even, as Python)."""
    if how == "floor":
        return max(0, math.floor(raw))
    if how == "ceil":
        return max(0, math.ceil(raw))
    return max(0, round(raw))


def apply_boosts(
    boosts: Sequence[CompiledBoost], rule_code: str, fact: Fact, who: Participant, amount: int
) -> tuple[int, list[dict[str, Any]] | None]:
    """(the boosted amount, the boosts applied as the ledger records them) for `amount`
    points of `rule_code` earned by `fact`; (amount, None) when no boost applies."""
    applied = [b for b in boosts if b.applies(rule_code, fact, who)]
    if not applied:
        return amount, None
    # Binary floats make 100 x 1.1 = 110.00000000000001: rounded to 9 places first, so a
    # ceiling is not pushed up by the representation error.
    if len(applied) == 1:
        only = applied[0]
        raw = round(amount * only.boost.multiplier, 9)
        return round_points(raw, only.boost.rounding), only.record
    applied.sort(key=lambda b: b.boost.code)
    product = float(amount)
    for compiled in applied:
        product *= compiled.boost.multiplier
    how = min((b.boost.rounding for b in applied), key=_LEAST_GENEROUS_FIRST.index)
    return round_points(round(product, 9), how), [r for b in applied for r in b.record]
