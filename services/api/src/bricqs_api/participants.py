"""Participant state: /api/v1/gamify/participants/{participant_id}/…, and its attributes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Controller, get, patch
from litestar.di import NamedDependency
from litestar.params import JSONBody

from bricqs.mechanics import state
from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.definition_checks import timezone_errors
from bricqs.mechanics.standings import move_to_group
from bricqs.participant_attributes import attribute_errors
from bricqs.storage.facts import list_facts
from bricqs.storage.ledger import list_ledger
from bricqs.storage.locks import lock_participants
from bricqs.storage.participants import merge_attributes, participant_groups
from bricqs.web.auth import requires
from bricqs.web.problems import ProblemError
from bricqs_api.context import (
    PROBLEMS,
    READS,
    BoardStandings,
    CallerTenant,
    Connection,
    FactTypeQuery,
    Page,
    Participant,
    ParticipantPath,
)


class ParticipantUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Attributes of a participant the mechanics use."""

    timezone: str | None = None
    attributes: dict[str, Any] | None = None
    """Free attributes (string, number, boolean; null removes one) that leaderboards
    group by; bounded by `bricqs.participant_attributes`."""


class ParticipantController(Controller):
    """What a participant has: points, badges, challenges, streaks, tiers, facts."""

    path = "/participants/{participant_id:str}"
    tags = ("participants",)
    security = requires("read", participant_token=True)
    dependencies = READS

    @get("/state", responses=PROBLEMS)
    async def participant_state(self, participant: Participant) -> dict[str, Any]:
        """Points, badges, challenges, streaks and tiers in one read."""
        return {
            "participant_id": participant.participant_id,
            "points": await participant.points(),
            "badges": await participant.badges(),
            "challenges": await participant.challenges(),
            "streaks": await participant.streaks(),
            "tiers": await participant.tiers(),
        }

    @get("/points", responses=PROBLEMS)
    async def participant_points(
        self, participant_id: ParticipantPath, conn: Connection, tenant: CallerTenant
    ) -> dict[str, Any]:
        """Balance, lifetime totals and the next expiry (`next_expiry`: at, amount)."""
        points = await state.points_state(conn, tenant, participant_id)
        return {"participant_id": participant_id, **points}

    @get("/points/transactions", responses=PROBLEMS)
    async def participant_transactions(
        self, participant_id: ParticipantPath, conn: Connection, tenant: CallerTenant, page: Page
    ) -> dict[str, Any]:
        """The points ledger, newest first; pass `next_cursor` back as `cursor` for more."""
        rows = await list_ledger(
            conn, tenant, participant_id, after=page.after, limit=page.limit + 1
        )
        return page.answer(rows, "entry_id")

    @get("/badges", responses=PROBLEMS)
    async def participant_badges(self, participant: Participant) -> dict[str, Any]:
        """Earned badges, and the not-yet-earned ones with progress."""
        return await participant.badges()

    @get("/challenges", responses=PROBLEMS)
    async def participant_challenges(self, participant: Participant) -> dict[str, Any]:
        """Progress per objective of every active challenge."""
        return {"items": await participant.challenges()}

    @get("/streaks", responses=PROBLEMS)
    async def participant_streaks(self, participant: Participant) -> dict[str, Any]:
        """Current and longest runs, with the at-risk flag."""
        return {"items": await participant.streaks()}

    @get("/tier", responses=PROBLEMS)
    async def participant_tier(self, participant: Participant) -> dict[str, Any]:
        """Level on each tier ladder and points to the next."""
        return {"items": await participant.tiers()}

    @get("/facts", responses=PROBLEMS)
    async def participant_facts(
        self,
        participant_id: ParticipantPath,
        conn: Connection,
        tenant: CallerTenant,
        page: Page,
        fact_type: FactTypeQuery = None,
    ) -> dict[str, Any]:
        """The participant's facts (custom and system), newest first, cursor-paginated."""
        rows = await list_facts(
            conn,
            tenant,
            participant_id,
            after=page.after,
            fact_type=fact_type,
            limit=page.limit + 1,
        )
        return page.answer(rows, "fact_id")


class ParticipantAttributesController(Controller):
    """The attributes of a participant the mechanics use: a write, unlike the reads above."""

    path = "/participants/{participant_id:str}"
    tags = ("participants",)
    security = requires("write")

    @patch("/", responses=PROBLEMS)
    async def update_participant(
        self,
        participant_id: ParticipantPath,
        data: JSONBody[ParticipantUpdate],
        conn: Connection,
        tenant: CallerTenant,
        rule_cache: NamedDependency[RuleCache],
        standings: BoardStandings,
    ) -> dict[str, Any]:
        """Set attributes: the IANA `timezone` that streaks with timezone "participant" use,
        and free `attributes` (a grouped leaderboard moves the participant to its new group)."""
        errors = timezone_errors(data.timezone, "timezone") if data.timezone is not None else []
        errors += attribute_errors(data.attributes or {})
        if errors:
            raise ProblemError(422, "validation_failed", "The update is invalid.", errors=errors)
        changes = dict(data.attributes or {})
        if data.timezone is not None:
            changes["timezone"] = data.timezone
        async with conn.transaction():
            await lock_participants(conn, [(tenant.project_id, tenant.environment, participant_id)])
            rules = await rule_cache(conn, tenant)
            grouped = sorted(
                {a for b in rules.leaderboards.values() if (a := b.leaderboard.group_by) in changes}
            )
            before = {
                a: await participant_groups(conn, tenant, a, [participant_id]) for a in grouped
            }
            merged = await merge_attributes(
                conn, tenant, participant_id, msgspec.json.encode(changes).decode()
            )
            if grouped:
                after = {
                    a: g[participant_id]
                    for a in grouped
                    if (g := await participant_groups(conn, tenant, a, [participant_id]))
                }
                await move_to_group(
                    conn,
                    standings,
                    tenant,
                    rules,
                    participant_id,
                    {a: g[participant_id] for a, g in before.items() if g},
                    after,
                    datetime.now(UTC),
                )
        return {"participant_id": participant_id, "attributes": merged}
