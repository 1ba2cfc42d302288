"""One round of a tenant's mechanics: the outcomes it records as system facts, the ledger
entries it owes, and what each event caused, for the sync endpoint's answer."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, fields
from typing import Any

from bricqs.facts import HISTORICAL_MARK
from bricqs.ids import new_fact_id
from bricqs.mechanics.conditions import Participant
from bricqs.mechanics.ruleset import RuleSet
from bricqs.schemas import Fact
from bricqs.storage.ledger import LedgerEntry
from bricqs.storage.tenants import Tenant


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
        # By the dataclass's fields, not vars(self): compiled (scripts/compile_hot_path.py),
        # an instance keeps its fields in slots, with no __dict__.
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name))}


# The effects list each system fact appears in (challenge progress is described apart).
_EFFECT_KINDS = {
    "points.awarded": "points",
    "badge.awarded": "badges",
    "streak.extended": "streaks",
    "tier.changed": "tiers",
}


@dataclass
class Round:
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
    participants: dict[str, Participant] = field(default_factory=dict)
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
