"""Overview: events today and in the last hour (with a chart of today by hour), events/s
now, the processor's backlog, dead letters, facts by type and the top outcomes today."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from redis.exceptions import ResponseError

from bricqs.facts import CUSTOM_FACT_PREFIX
from bricqs.redis_connect import RedisClient
from bricqs.storage.stats import events_since, facts_by_hour
from bricqs.storage.tenants import Conn
from bricqs.stream import CONSUMER_GROUP, historical_stream_key, stream_key
from bricqs_api.console.dead_letters import tenant_letters
from bricqs_api.console.rendering import page
from bricqs_api.console.session import SignedIn
from bricqs_api.context import ApiClients

RATE_WINDOW = timedelta(minutes=1)
CHART_HEIGHT = 100


@dataclass(frozen=True)
class Backlog:
    """What the processors have yet to do, over every shard (every project's events)."""

    lag: int
    """Entries on the streams not yet read by the consumer group."""
    pending: int
    """Entries read but not yet acknowledged."""


async def backlog(redis: RedisClient, shards: int) -> Backlog:
    """The consumer group's lag and pending count, summed over the shards' live and
    historical (import) streams."""
    lag = pending = 0
    for stream in [key(n) for n in range(shards) for key in (stream_key, historical_stream_key)]:
        try:
            groups: Any = await redis.xinfo_groups(stream)
        except ResponseError:  # no stream yet: nothing sent to this shard
            continue
        for group in groups:
            name = group.get("name")
            if name in (CONSUMER_GROUP, CONSUMER_GROUP.encode()):
                lag += int(group.get("lag") or 0)
                pending += int(group.get("pending") or 0)
    return Backlog(lag, pending)


def hour_bars(counts: dict[datetime, int], day_start: datetime) -> list[dict[str, Any]]:
    """The chart's 24 bars (one per UTC hour of the day), scaled to CHART_HEIGHT."""
    hours = [day_start + timedelta(hours=h) for h in range(24)]
    peak = max(counts.values(), default=0) or 1
    return [
        {
            "hour": hour.hour,
            "count": counts.get(hour, 0),
            "height": round(CHART_HEIGHT * counts.get(hour, 0) / peak),
        }
        for hour in hours
    ]


class OverviewPage(Controller):
    """The console's first page."""

    path = "/"
    include_in_schema = False

    @get("/")
    async def overview(
        self,
        request: Request[Any, Any, Any],
        user: SignedIn,
        conn: NamedDependency[Conn],
        clients: NamedDependency[ApiClients],
    ) -> Response[str]:
        """Today's activity of the tenant, and the health of the pipeline."""
        now = datetime.now(UTC)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        by_hour = await facts_by_hour(conn, user.tenant, day_start)
        # The rate is over the minute before this one and this one so far.
        rate_since = now.replace(second=0, microsecond=0) - RATE_WINDOW
        last_hour, last_minutes = await events_since(
            conn, user.tenant, [now - timedelta(hours=1), rate_since]
        )
        hourly: dict[datetime, int] = {}
        today: dict[str, int] = {}
        for (hour, fact_type), count in by_hour.items():
            today[fact_type] = today.get(fact_type, 0) + count
            if fact_type.startswith(CUSTOM_FACT_PREFIX):
                at = day_start + timedelta(hours=hour)
                hourly[at] = hourly.get(at, 0) + count
        shards = clients.settings.stream_shards
        outcomes = {t: n for t, n in today.items() if not t.startswith(CUSTOM_FACT_PREFIX)}
        return page(
            request,
            "overview.html",
            user=user,
            events_today=sum(hourly.values()),
            events_last_hour=last_hour,
            events_per_second=last_minutes / (now - rate_since).total_seconds(),
            bars=hour_bars(hourly, day_start),
            chart_height=CHART_HEIGHT,
            backlog=await backlog(clients.redis, shards),
            dead_letters=len(await tenant_letters(clients.redis, shards, user.tenant)),
            today=sorted(today.items(), key=lambda item: -item[1]),
            outcomes=sorted(outcomes.items(), key=lambda item: -item[1])[:5],
        )
