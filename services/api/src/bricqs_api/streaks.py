"""Streak administration: restoring a participant's broken run."""

from __future__ import annotations

from typing import Any

from litestar import Controller, post
from litestar.di import NamedDependency

from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.restore import StreakNotStarted, restore_streak
from bricqs.mechanics.standings import utc_now
from bricqs.mechanics.state import streaks_state
from bricqs.web.auth import requires
from bricqs.web.problems import ProblemError
from bricqs_api.context import PROBLEMS, CallerTenant, CodePath, Connection, ParticipantPath


class StreakAdminController(Controller):
    """What an admin may do to a participant's streaks."""

    path = "/admin/streaks"
    tags = ("streaks",)
    security = requires("admin")

    @post(
        "/{code:str}/participants/{participant_id:str}/restore", responses=PROBLEMS, status_code=200
    )
    async def restore(
        self,
        code: CodePath,
        participant_id: ParticipantPath,
        conn: Connection,
        tenant: CallerTenant,
        rule_cache: NamedDependency[RuleCache],
    ) -> dict[str, Any]:
        """Restore the participant's latest broken run: the periods missed at the break
        are bridged, so the run goes on (idempotent: once restored, `bridged` is empty)."""
        now = utc_now()
        async with conn.transaction():
            rules = await rule_cache(conn, tenant)
            compiled = rules.streaks.get(code)
            if compiled is None:
                raise ProblemError(404, "definition_not_found", f"No active streak {code!r}.")
            try:
                bridged = await restore_streak(conn, tenant, compiled.streak, participant_id, now)
            except StreakNotStarted as exc:
                raise ProblemError(
                    404, "streak_not_started", f"{participant_id!r} never kept streak {code!r}."
                ) from exc
            state = await streaks_state(conn, tenant, rules, participant_id, now)
        return {
            "participant_id": participant_id,
            "bridged": bridged,
            "state": next(s for s in state if s["streak"] == code),
        }
