"""The one way a service gets its Redis client: one server, or a Redis Cluster.

With `REDIS_CLUSTER=true`, `REDIS_URL` names a seed node; the cluster client learns the
slot map from it and follows MOVED and ASK redirections itself (a redirected command was
not run, so following it is always safe). Every key the services use carries a hash tag
(`{shard}` for a shard's stream, dead letters and idempotency keys, `{key id}` for a rate
bucket), and no command, pipeline entry or script touches two tags, so each runs on the
one node that holds its slot.

A failover (a node gone, its replica promoted) is retried by the cluster client, which
reloads the slot map between attempts; the caller's own deadline bounds the whole (ingest
answers 503 past `REDIS_TIMEOUT_MS`). Retrying a command whose reply was lost with the
connection may run it twice: for the streams that is an entry added twice, which the
processor stores once, since storing is keyed by event id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisClusterException, RedisError

if TYPE_CHECKING:
    RedisClient: TypeAlias = Redis | RedisCluster
    """A plain Redis client or a cluster client: the commands used exist on both."""
else:
    # At run time the alias is Any: Litestar checks the values it injects against their
    # annotations with msgspec, which takes no union of two classes.
    RedisClient = Any

# What a Redis call can raise when Redis (or the cluster's slot map) is not there: the
# cluster client's own exceptions (no node serves the slot, say) are not RedisErrors.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)

# Attempts after the first while a cluster fails over: a promotion takes a few gossip
# rounds, and the caller's deadline cuts the attempts short anyway.
CLUSTER_RETRIES = 5


def connect_redis(
    url: str, *, cluster: bool, timeout_s: float, read_timeout_s: float | None = None
) -> RedisClient:
    """A client of the Redis at `url` (a seed node when `cluster`).

    `timeout_s` bounds connecting and each round trip; `read_timeout_s`, when given,
    replaces it for reads (a blocking XREADGROUP waits on top of the round trip). A plain
    client never retries on its own: its callers retry with their own backoff, or answer
    503 and let the client retry with its idempotency key.
    """
    read_timeout = read_timeout_s if read_timeout_s is not None else timeout_s
    if not cluster:
        return Redis.from_url(
            url,
            socket_timeout=read_timeout,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
    return RedisCluster.from_url(
        url,
        socket_timeout=read_timeout,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=timeout_s / 4, base=0.05), CLUSTER_RETRIES),
        # While a slot has no primary the client still starts and serves the other slots.
        require_full_coverage=False,
    )
