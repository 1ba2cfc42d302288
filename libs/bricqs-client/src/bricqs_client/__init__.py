"""Python client for the Bricqs engine.

from bricqs_client import Client
with Client("bq_test_…", ingest_url="http://127.0.0.1:8000") as bricqs:
    bricqs.track("lesson_completed", "user_123", {"lesson": 4})
"""

from bricqs_client.async_client import AsyncClient
from bricqs_client.base import VERSION
from bricqs_client.client import Client
from bricqs_client.delivery import Options, Tally
from bricqs_client.errors import (
    AuthenticationError,
    BricqsError,
    ConflictError,
    NotFoundError,
    ProblemError,
    RateLimitedError,
    TransportError,
    UnavailableError,
    ValidationError,
)
from bricqs_client.models import (
    BadgeAward,
    BadgeState,
    Definition,
    DefinitionKind,
    Effects,
    EventFailure,
    FieldError,
    Leaderboard,
    LeaderboardEntry,
    Page,
    ParticipantState,
    PointsBalance,
    PointsChange,
    Rank,
    SyncResult,
    TrackedEvent,
)

__version__ = VERSION

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BadgeAward",
    "BadgeState",
    "BricqsError",
    "Client",
    "ConflictError",
    "Definition",
    "DefinitionKind",
    "Effects",
    "EventFailure",
    "FieldError",
    "Leaderboard",
    "LeaderboardEntry",
    "NotFoundError",
    "Options",
    "Page",
    "ParticipantState",
    "PointsBalance",
    "PointsChange",
    "ProblemError",
    "Rank",
    "RateLimitedError",
    "SyncResult",
    "Tally",
    "TrackedEvent",
    "TransportError",
    "UnavailableError",
    "ValidationError",
    "__version__",
]
