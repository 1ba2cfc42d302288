"""Dead letters: the tenant's events the processor gave up on, with the reason and the
payload; replay one or all (after a confirmation) with bricqs-admin's atomic move.

The dead-letter streams hold every project's letters: a letter shows here only when its
envelope decodes and names the signed-in tenant (an undecodable one is for bricqs-admin).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Redirect

from bricqs.admin_dlq import REPLAY_SCRIPT
from bricqs.redis_connect import RedisClient
from bricqs.schemas import ENVELOPE_FIELD, Envelope, decode_envelope
from bricqs.storage.tenants import Tenant
from bricqs.stream import DeadLetter, dead_letter_key, replay_stream
from bricqs_api.console.rendering import page
from bricqs_api.console.session import SignedIn, require
from bricqs_api.console.signin import Form
from bricqs_api.context import ApiClients

SCAN_LIMIT = 1000
"""Most dead letters read per shard for one page: a bound on the page's work."""


@dataclass(frozen=True)
class TenantLetter:
    """A dead letter of the tenant, with the event it holds."""

    entry_id: str
    shard: int
    letter: DeadLetter
    event: Envelope


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def tenant_letters(redis: RedisClient, shards: int, tenant: Tenant) -> list[TenantLetter]:
    """The tenant's dead letters, oldest first per shard (up to SCAN_LIMIT read per shard)."""
    letters = []
    for shard in range(shards):
        rows: Any = await redis.xrange(dead_letter_key(shard), count=SCAN_LIMIT)
        for entry_id, fields in rows:
            letter = DeadLetter.from_fields(fields)
            try:
                event = decode_envelope(letter.payload)
            except msgspec.DecodeError:
                continue
            if (event.project_id, event.environment) == (tenant.project_id, tenant.environment):
                letters.append(TenantLetter(_text(entry_id), shard, letter, event))
    return letters


async def replay(redis: RedisClient, letters: list[TenantLetter]) -> int:
    """Put each letter's original payload back on its shard's stream; how many moved (a
    letter replayed meanwhile by someone else is not moved twice)."""
    script: Any = redis.register_script(REPLAY_SCRIPT)
    moved = 0
    for item in letters:
        new_id = await script(
            keys=[dead_letter_key(item.shard), replay_stream(item.shard, item.letter)],
            args=[item.entry_id, ENVELOPE_FIELD],
        )
        moved += new_id is not None
    return moved


class DeadLetterPages(Controller):
    """List and replay the tenant's dead letters."""

    path = "/dead-letters"
    include_in_schema = False

    @get("/")
    async def dead_letters(
        self,
        request: Request[Any, Any, Any],
        user: SignedIn,
        clients: NamedDependency[ApiClients],
        replayed: Annotated[int | None, QueryParameter(ge=0)] = None,
    ) -> Response[str]:
        """Every dead letter of the tenant with its reason and payload."""
        letters = await tenant_letters(clients.redis, clients.settings.stream_shards, user.tenant)
        return page(request, "dead_letters.html", user=user, letters=letters, replayed=replayed)

    @post("/replay", status_code=200)
    async def replay_letters(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[dict[str, str], Form],
        user: SignedIn,
        clients: NamedDependency[ApiClients],
    ) -> Response[Any]:
        """First post: what would be replayed; confirmed post: the replay."""
        require(user, "admin")
        letters = await tenant_letters(clients.redis, clients.settings.stream_shards, user.tenant)
        wanted = data.get("entry_id", "")
        chosen = [item for item in letters if wanted in ("all", item.entry_id)]
        if data.get("confirmed") != "yes":
            return page(request, "confirm_replay.html", user=user, letters=chosen, entry_id=wanted)
        moved = await replay(clients.redis, chosen)
        return Redirect(f"/console/dead-letters?replayed={moved}", status_code=303)
