"""Rate limits: a token bucket per API key in Redis, shared by every worker and pod.

One bucket per key, apart from the streams: the limit is the key's whatever the number
of shards, and tokens are taken before anything is enqueued, so a batch is admitted whole
or refused whole. Tokens for events that were not queued are given back.

Historical imports are also paced, by a second bucket per key
(HISTORICAL_RATE_PER_SECOND, holding one batch): a batch that finds it empty is held
until its tokens are there, so an importer sending batch after batch as fast as it can
is slowed to the pace instead of refused; only a wait past `IMPORT_HOLD_SECONDS` (many
importers on one key) is answered 429. Without it an importer sending flat out takes
ingest's and Redis' CPU from the live events arriving meanwhile (bench.historical_import
measures it). The pace's tokens are not given back when an enqueue fails: they measure
arrivals, not a quota.
"""

from __future__ import annotations

import asyncio
import logging
import math

from bricqs.storage.tenants import KeyOwner
from bricqs.stream import import_pace_key, rate_bucket_key
from bricqs.web.problems import ProblemError
from bricqs_ingest.context import IngestContext
from bricqs_ingest.metrics import EVENTS
from bricqs_ingest.publisher import QueueUnavailable, RateLimit, RateLimited, Taken, TakeTokens
from bricqs_ingest.settings import IngestSettings

log = logging.getLogger("bricqs.ingest")


def limit_for(settings: IngestSettings, owner: KeyOwner) -> RateLimit | None:
    """The token bucket of this key, or None when the key has no limit."""
    per_second = owner.rate_limit_per_second
    if per_second is None:
        per_second = settings.rate_limit_per_second
    if per_second <= 0:
        return None
    burst = owner.rate_limit_burst or settings.rate_limit_burst
    return RateLimit(rate_bucket_key(owner.key_id), per_second, burst)


# Longest a historical batch is held for its turn before it is refused with 429.
IMPORT_HOLD_SECONDS = 2.0


def import_pace_for(
    settings: IngestSettings, owner: KeyOwner, batch_events: int
) -> RateLimit | None:
    """The bucket pacing this key's historical imports, or None when they are not paced."""
    if settings.historical_rate_per_second <= 0:
        return None
    return RateLimit(
        import_pace_key(owner.key_id), settings.historical_rate_per_second, batch_events
    )


async def wait_for_turn(ctx: IngestContext, pace: RateLimit, cost: int) -> None:
    """Take `cost` tokens of an import's pace, waiting for them up to
    IMPORT_HOLD_SECONDS; past that, refuse the request (429)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + IMPORT_HOLD_SECONDS
    while True:
        (taken,) = await ctx.enqueue([TakeTokens(pace, cost)])
        if not isinstance(taken, RateLimited):
            return
        wait = taken.retry_after_ms / 1000
        if loop.time() + wait > deadline:
            EVENTS.labels("batch", "rate_limited").inc(cost)
            raise rate_limited(pace, taken)
        await asyncio.sleep(wait)


async def take(ctx: IngestContext, limit: RateLimit, cost: int, endpoint: str) -> Taken:
    """Take `cost` tokens, or refuse the request (429) and count its events."""
    (taken,) = await ctx.enqueue([TakeTokens(limit, cost)])
    if isinstance(taken, RateLimited):
        EVENTS.labels(endpoint, "rate_limited").inc(cost)
        raise rate_limited(limit, taken)
    assert isinstance(taken, Taken)
    return taken


async def give_back(ctx: IngestContext, limit: RateLimit, cost: int) -> None:
    """Return tokens taken for events that were not queued (best effort: a Redis that
    failed the enqueue may fail this too, and then the tokens refill with time)."""
    try:
        await ctx.publisher.enqueue([TakeTokens(limit, -cost)])
    except QueueUnavailable as exc:
        log.warning("could not give back %d rate-limit tokens: %s", cost, exc)


def rate_limited(limit: RateLimit, result: RateLimited) -> ProblemError:
    """The 429 of a refused request."""
    wait = max(1, math.ceil(result.retry_after_ms / 1000))
    return ProblemError(
        429,
        "rate_limited",
        f"Too many events for this API key; retry in {wait} s.",
        headers={"Retry-After": str(wait), **rate_headers(limit, result.remaining, wait)},
    )


def rate_headers(limit: RateLimit | None, remaining: int, reset: int = 0) -> dict[str, str]:
    """RateLimit-* headers (IETF draft): bucket size, tokens left, seconds to wait."""
    if limit is None or remaining < 0:
        return {}
    return {
        "RateLimit-Limit": str(limit.burst),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset),
    }
