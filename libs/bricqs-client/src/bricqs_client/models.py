"""What the client sends and what the engine answers, as msgspec structs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec


class TrackedEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One event as `track()` queued it (and as the batch endpoint receives it)."""

    # gc=False: a full queue holds many of these, and they never form reference cycles,
    # so the garbage collector need not walk them.

    event_name: str
    participant_id: str
    idempotency_key: str
    timestamp: datetime | str | None = None
    properties: dict[str, Any] | None = None


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    """One problem with one field of a request, as the server named it."""

    field: str
    message: str
    code: str = ""


class EventFailure(msgspec.Struct, frozen=True, kw_only=True):
    """An event the client gave up on, handed to `on_error`.

    `status` is the HTTP status of the answer that settled it (None when the server was
    never reached); `code` is the server's problem code, or the client's own
    (`retries_exhausted`, `queue_full`, `event_too_large`, `shutdown`)."""

    event: TrackedEvent
    code: str
    detail: str
    status: int | None = None
    errors: tuple[FieldError, ...] = ()


class Effects(msgspec.Struct, frozen=True, kw_only=True):
    """What one event changed in the mechanics (each list empty when nothing)."""

    points: list[dict[str, Any]] = []
    badges: list[dict[str, Any]] = []
    challenges: list[dict[str, Any]] = []
    streaks: list[dict[str, Any]] = []
    tiers: list[dict[str, Any]] = []


class SyncResult(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of `track_sync()`: the stored event, its fact and their effects."""

    event_id: str
    fact_id: str
    fact_type: str
    processed_at: datetime
    duplicate: bool = False
    effects: Effects = Effects()


class PointsBalance(msgspec.Struct, frozen=True, kw_only=True):
    """Balance and lifetime totals of a participant's points."""

    balance: int
    total_earned: int
    total_spent: int
    participant_id: str = ""


class BadgeState(msgspec.Struct, frozen=True, kw_only=True):
    """Earned badges and the progress towards the others."""

    earned: list[dict[str, Any]]
    not_earned: list[dict[str, Any]]


class ParticipantState(msgspec.Struct, frozen=True, kw_only=True):
    """Points, badges, challenges, streaks and tiers of one participant in one read."""

    participant_id: str
    points: PointsBalance
    badges: BadgeState
    challenges: list[dict[str, Any]]
    streaks: list[dict[str, Any]]
    tiers: list[dict[str, Any]]


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """A list read; `next_cursor` is passed back as `cursor` for the next page."""

    items: list[dict[str, Any]]
    next_cursor: str | None = None


class LeaderboardEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One row of a leaderboard."""

    rank: int
    participant_id: str
    score: float


class Leaderboard(msgspec.Struct, frozen=True, kw_only=True):
    """The top of a leaderboard for one period."""

    leaderboard: str
    period: str
    total_participants: int
    entries: list[LeaderboardEntry]


class Rank(msgspec.Struct, frozen=True, kw_only=True):
    """One participant's place on a leaderboard."""

    leaderboard: str
    period: str
    participant_id: str
    rank: int
    score: float
    total_participants: int
    percentile: float


class PointsChange(msgspec.Struct, frozen=True, kw_only=True):
    """The ledger entry of a manual award or deduction, and the balance after it."""

    entry_id: str
    participant_id: str
    amount: int
    balance: int
    duplicate: bool


class BadgeAward(msgspec.Struct, frozen=True, kw_only=True):
    """A manual badge award; `awarded` is False when the participant already had it."""

    participant_id: str
    badge: str
    awarded: bool


DefinitionKind = Literal["points-rules", "badges", "challenges", "streaks", "leaderboards", "tiers"]
"""The mechanic kinds, as the admin routes name them."""

Period = Literal["all_time", "daily", "weekly", "monthly"]


class Definition(msgspec.Struct, frozen=True, kw_only=True):
    """A stored definition: its code, status and version, and every field it holds."""

    code: str
    status: str
    version: int
    created_at: datetime
    updated_at: datetime
    fields: dict[str, Any]
    """The whole definition as stored (including the keys above)."""
