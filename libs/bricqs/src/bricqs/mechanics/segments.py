"""Segments and participant conditions: which definitions read participants' attributes,
and the segments each participant of a batch is in (pure).

Attributes are read as they are when a fact is processed (there is no history of them),
once per batch and only for rule sets that read them: see `RuleSet.reads_participants`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bricqs.mechanics.conditions import Condition, Participant, reads_participant
from bricqs.mechanics.definitions import (
    Badge,
    Boost,
    Challenge,
    Definition,
    Leaderboard,
    PointsRule,
    Streak,
)


def reads_participants(definition: Definition) -> bool:
    """Whether applying `definition` needs the attributes of a fact's participant."""
    if isinstance(definition, PointsRule | Streak):
        return reads_participant(definition.trigger.where)
    if isinstance(definition, Badge):
        return any(reads_participant(t.criterion.where) for t in definition.criteria)
    if isinstance(definition, Challenge):
        return any(reads_participant(o.criterion.where) for o in definition.objectives)
    if isinstance(definition, Leaderboard):
        return definition.criterion is not None and reads_participant(definition.criterion.where)
    if isinstance(definition, Boost):
        return definition.scope == "segment"
    return False


def participants_in_segments(
    segments: Mapping[str, Condition], attributes: Mapping[str, dict[str, Any]]
) -> dict[str, Participant]:
    """Each participant's attributes with the segments they put it in."""
    found = {}
    for participant_id, values in attributes.items():
        bare = Participant(values)
        within = frozenset(code for code, test in segments.items() if test.holds({}, bare))
        found[participant_id] = Participant(values, within)
    return found
