"""Participant data rights: erase everything held about a participant, or export it.

`DELETE /participants/{id}` erases in bounded batches, each committed on its own, and
records the erasure (who, when, a digest of the id) before the first batch; a request
cut short is resumed by sending it again. While the participant still has events queued
on the streams it answers 202 with Retry-After: their outcomes would otherwise be
written after the erasure. Once nothing is left, a repeated request answers the record
of the latest erasure and changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Controller, Response, delete, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from bricqs.participant_keys import ParticipantKeys, Queued
from bricqs.storage import participant_data
from bricqs.storage.participant_data import Erasure
from bricqs.storage.standings import Standings
from bricqs.stream import IDEMPOTENCY_TTL_SECONDS
from bricqs.web.auth import requires
from bricqs_api.context import (
    PROBLEMS,
    ApiClients,
    Caller,
    CallerTenant,
    Connection,
    Participant,
    ParticipantPath,
)

# Rows deleted per statement (and per transaction).
ERASE_BATCH_ROWS = 1000


# 202: the participant still has queued events; the erasure is recorded, send it again.
ERASURE_RESPONSES = {
    **PROBLEMS,
    202: ResponseSpec(
        data_container=dict[str, Any],
        description="Waiting for the participant's queued events; repeat after Retry-After.",
    ),
}


def _answer(erasure: Erasure, status: str) -> dict[str, Any]:
    return {"status": status, **erasure._asdict()}


class ParticipantDataController(Controller):
    """Erasure (GDPR art. 17) and export (art. 15, 20) of one participant's data."""

    path = "/participants/{participant_id:str}"
    tags = ("participants",)
    security = requires("admin")

    @delete("/", status_code=200, responses=ERASURE_RESPONSES)
    async def erase_participant(
        self,
        participant_id: ParticipantPath,
        conn: Connection,
        tenant: CallerTenant,
        caller: Caller,
        clients: NamedDependency[ApiClients],
    ) -> Response[dict[str, Any]]:
        """Erase the participant's events, facts, points, progress, awards, streaks,
        rankings, webhook messages and Redis data in this environment."""
        keys = ParticipantKeys(clients.redis, tenant, participant_id)
        queued = await keys.queued()
        latest = await participant_data.latest_erasure(conn, tenant, participant_id)
        if latest is None or latest.completed_at is not None:
            if latest is not None and not await self._anything_left(conn, tenant, keys, queued):
                return Response(_answer(latest, "erased"))
            latest = await participant_data.start_erasure(
                conn, tenant, participant_id, caller.key_id
            )
        await conn.commit()
        if queued.waiting:
            retry = str(clients.settings.retry_after_seconds)
            return Response(
                _answer(latest, "waiting_for_queued_events"),
                status_code=202,
                headers={"Retry-After": retry},
            )
        since = datetime.now(UTC) - timedelta(seconds=IDEMPOTENCY_TTL_SECONDS)
        event_ids = queued.event_ids | await participant_data.recent_idempotent_event_ids(
            conn, tenant, participant_id, since
        )
        # Leaderboard mirrors first: their entries are found through the members hash,
        # which the generic sweep (remove_keys) would drop.
        removed_keys = await Standings(clients.redis).forget(
            tenant.project_id, tenant.environment, participant_id
        )
        removed_keys += await keys.remove_entries(queued) + await keys.remove_keys(event_ids)
        await participant_data.count_erased(conn, latest.erasure_id, rows=0, keys=removed_keys)
        await conn.commit()
        while rows := await participant_data.erase_batch(
            conn, tenant, participant_id, ERASE_BATCH_ROWS
        ):
            await participant_data.count_erased(conn, latest.erasure_id, rows=rows, keys=0)
            await conn.commit()
        done = await participant_data.complete_erasure(conn, latest.erasure_id)
        return Response(_answer(done, "erased"))

    @staticmethod
    async def _anything_left(
        conn: Connection, tenant: CallerTenant, keys: ParticipantKeys, queued: Queued
    ) -> bool:
        """Whether rows or queued entries of the participant exist again (a new erasure)."""
        if queued.entries:
            return True
        rows = await participant_data.export_rows(conn, tenant, keys.participant_id)
        return any(rows.values())

    @get("/export", responses=PROBLEMS)
    async def export_participant(
        self, participant: Participant, clients: NamedDependency[ApiClients]
    ) -> dict[str, Any]:
        """Everything held about the participant: the state the state API shows, every
        stored row by table, and their events still on the streams."""
        rows = await participant_data.export_rows(
            participant.conn, participant.tenant, participant.participant_id
        )
        keys = ParticipantKeys(clients.redis, participant.tenant, participant.participant_id)
        queued = await keys.queued()
        return {
            "participant_id": participant.participant_id,
            "exported_at": participant.now,
            "state": {
                "points": await participant.points(),
                "badges": await participant.badges(),
                "challenges": await participant.challenges(),
                "streaks": await participant.streaks(),
                "tiers": await participant.tiers(),
            },
            "stored": rows,
            "queued_events": [msgspec.to_builtins(e) for e in queued.events.values()],
        }
