"""What one event caused, as the sync endpoint answers it (`Effects.as_dict`), compiled or
not: `make test` runs the compiled module (scripts/compile_hot_path.py)."""

from __future__ import annotations

from bricqs.mechanics.rounds import Effects


def test_effects_name_only_the_kinds_that_have_something_to_say() -> None:
    effects = Effects()
    assert effects.as_dict() == {}
    effects.points.append({"amount": 5})
    effects.tiers.append({"tier": "status", "to": "b"})
    assert effects.as_dict() == {
        "points": [{"amount": 5}],
        "tiers": [{"tier": "status", "to": "b"}],
    }
