"""What one worker process shares between requests, and the failures every endpoint
answers alike (queue down, backlog too long)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from litestar import Litestar
from litestar.datastructures import State
from psycopg_pool import AsyncConnectionPool

from bricqs.auth import KeyCache
from bricqs.mechanics.cache import RuleCache
from bricqs.participant_tokens import ParticipantTokens
from bricqs.redis_connect import RedisClient
from bricqs.storage.tenants import Scope
from bricqs.web.auth import requires
from bricqs.web.cors import ProjectOrigins
from bricqs.web.problems import ProblemError
from bricqs_ingest.backlog import BacklogMonitor
from bricqs_ingest.publisher import Command, EnqueueResult, QueueUnavailable, StreamPublisher
from bricqs_ingest.settings import IngestSettings

log = logging.getLogger("bricqs.ingest")

# Every ingest route sends events: a key with `ingest`, or a participant token for its own
# participant's events. Declared once, on the router (and in the OpenAPI document).
INGEST_SCOPE: Scope = "ingest"
INGEST_SECURITY = requires(INGEST_SCOPE, participant_token=True)
# On top of it, for the batch route alone: a key that may only send historical imports.
IMPORT_SCOPE: Scope = "import"
IMPORT_SECURITY = requires(IMPORT_SCOPE)


@dataclass
class IngestContext:
    """The clients one worker process shares between requests, made in the lifespan and
    kept on `app.state.ingest`."""

    settings: IngestSettings
    redis: RedisClient
    pool: AsyncConnectionPool
    publisher: StreamPublisher
    keys: KeyCache
    rules: RuleCache
    tokens: ParticipantTokens
    origins: ProjectOrigins
    backlog: BacklogMonitor

    def unavailable(self, code: str, detail: str) -> ProblemError:
        """A 503 with the configured Retry-After."""
        headers = {"Retry-After": str(self.settings.retry_after_seconds)}
        return ProblemError(503, code, detail, headers=headers)

    async def enqueue(self, commands: Sequence[Command]) -> list[EnqueueResult]:
        """Run enqueue commands; 503 queue_unavailable when Redis does not answer."""
        try:
            return await self.publisher.enqueue(commands)
        except QueueUnavailable as exc:
            log.warning("enqueue failed: %s", exc)
            raise self.unavailable("queue_unavailable", "The event queue is unavailable.") from exc

    def check_backlog(self, *, historical: bool = False) -> None:
        """503 ingest_backpressure while the processors are too far behind (for an import,
        also while they are too far behind with imports)."""
        if self.backlog.over or (historical and self.backlog.historical_over):
            raise self.unavailable(
                "ingest_backpressure",
                "Events are arriving faster than they are processed; retry shortly.",
            )


def ingest_context(state: State) -> IngestContext:
    """The dependency handlers take as `ctx`."""
    context: IngestContext = state.ingest
    return context


def cors_context(app: Litestar) -> tuple[ProjectOrigins, ParticipantTokens]:
    """What the CORS middleware needs of the worker's context."""
    context = ingest_context(app.state)
    return context.origins, context.tokens
