"""The Redis read model of leaderboards: one sorted set per board, run and group.

PostgreSQL (`leaderboard_scores`, see rankings.py) holds the standings; Redis mirrors
them so that the top N, one participant's rank and the K around them cost O(log n + K).

Layout, every key of a board tagged `{project:environment:code}` so a command or script
touches one slot (Redis Cluster):

- `…:RUN:z:GROUP`: sorted set, score = -value, member = `REACHED|participant`, REACHED the
  microsecond the value was reached as fixed-width hex. Ascending order is then the
  ranking: higher value first, then earlier reach, then participant id (byte order).
- `…:RUN:m`: hash participant -> member, to find a participant's entry and replace it
  when its value or reach time changes.
- `…:RUN:ready`: the board shape this run was loaded for; absent or another shape means
  the mirror must be (re)loaded from PostgreSQL before it is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bricqs.redis_connect import RedisClient

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOAD_CHUNK = 5000

# Replace participants' entries, ARGV = (participant, -value, member) triples: ZREM each
# old member (any group it was in is the caller's KEYS[2]: groups move only through
# `move`), ZADD the new one. Absolute values, so a repeat changes nothing. One call per
# run and group of a batch, not one per participant: the round trips and the client's
# work per command are what a batch pays.
_SET = """
for i = 1, #ARGV, 3 do
  local pid, score, member = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[1], pid)
  if old ~= member then
    if old then redis.call('ZREM', KEYS[2], old) end
    redis.call('HSET', KEYS[1], pid, member)
  end
  redis.call('ZADD', KEYS[2], score, member)
end
return #ARGV / 3
"""

# A participant's rank (0-based), negated score and the set's size; nil when unranked.
_RANK = """
local member = redis.call('HGET', KEYS[1], ARGV[1])
if not member then return nil end
local rank = redis.call('ZRANK', KEYS[2], member)
if not rank then return nil end
return {rank, redis.call('ZSCORE', KEYS[2], member), redis.call('ZCARD', KEYS[2])}
"""

# The entries from K above to K below a participant, with the first one's rank.
_AROUND = """
local member = redis.call('HGET', KEYS[1], ARGV[1])
if not member then return nil end
local rank = redis.call('ZRANK', KEYS[2], member)
if not rank then return nil end
local k = tonumber(ARGV[2])
local first = math.max(0, rank - k)
return {first, redis.call('ZRANGE', KEYS[2], first, rank + k, 'WITHSCORES'),
        redis.call('ZCARD', KEYS[2])}
"""

# Move a participant's entry from one group's set to another's.
_MOVE = """
local member = redis.call('HGET', KEYS[1], ARGV[1])
if not member then return 0 end
local score = redis.call('ZSCORE', KEYS[2], member)
if not score then return 0 end
redis.call('ZREM', KEYS[2], member)
redis.call('ZADD', KEYS[3], score, member)
return 1
"""

# Remove a participant from one run: KEYS = (the members hash, every group's set).
_FORGET = """
local member = redis.call('HGET', KEYS[1], ARGV[1])
if not member then return 0 end
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], member) end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class RunKeys:
    """The keys of one run of one board."""

    prefix: str

    @classmethod
    def of(cls, project_id: str, environment: str, code: str, run: int) -> RunKeys:
        """The keys of run `run` of board `code`."""
        return cls(f"bricqs:lb:{{{project_id}:{environment}:{code}}}:{run}")

    @property
    def members(self) -> str:
        """The participant -> member hash."""
        return f"{self.prefix}:m"

    @property
    def ready(self) -> str:
        """The shape this run's mirror was loaded for."""
        return f"{self.prefix}:ready"

    def group(self, group: str) -> str:
        """The sorted set of one group ('' for a board without groups)."""
        return f"{self.prefix}:z:{group}"


@dataclass(frozen=True)
class Standing:
    """One participant's value on one run of a board, as stored in PostgreSQL."""

    participant_id: str
    score: float
    reached_at: datetime


@dataclass(frozen=True)
class Push:
    """A standing to mirror into one group of one run."""

    keys: RunKeys
    group: str
    standing: Standing


def member(standing: Standing) -> str:
    """The sorted-set member: fixed-width reach time, then the participant id."""
    micros = max(0, (standing.reached_at - _EPOCH) // _MICROSECOND)
    return f"{micros:014x}|{standing.participant_id}"


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


def _participant(raw: bytes | str) -> str:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return text.split("|", 1)[1]


def _value(raw: Any) -> float:
    return -float(raw)


class Standings:
    """Reads and writes of the mirror through one Redis client (scripts registered once)."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._set = redis.register_script(_SET)
        self._rank = redis.register_script(_RANK)
        self._around = redis.register_script(_AROUND)
        self._move = redis.register_script(_MOVE)
        self._forget = redis.register_script(_FORGET)

    async def push(self, pushes: Sequence[Push]) -> None:
        """Mirror absolute standings (idempotent: a repeat changes nothing)."""
        by_set: dict[tuple[str, str], list[Any]] = {}
        for p in pushes:
            args = by_set.setdefault((p.keys.members, p.keys.group(p.group)), [])
            args += (p.standing.participant_id, -p.standing.score, member(p.standing))
        if len(by_set) == 1:
            ((keys, args),) = by_set.items()
            await self._set(keys=list(keys), args=args)
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in by_set.items():
                # A pipeline is a client of the scripts (typed only as the plain client).
                await self._set(keys=list(keys), args=args, client=pipe)  # type: ignore[arg-type]
            await pipe.execute()

    async def move(self, keys: RunKeys, participant_id: str, old: str, new: str) -> None:
        """Move a participant's entry from group `old` to group `new`."""
        await self._move(
            keys=[keys.members, keys.group(old), keys.group(new)], args=[participant_id]
        )

    async def forget(self, project_id: str, environment: str, participant_id: str) -> int:
        """Remove a participant from every run and group of the tenant's boards (an
        erasure: their PostgreSQL standings go with their other rows); how many runs held
        them."""
        tenant = f"bricqs:lb:{{{_glob(project_id)}:{_glob(environment)}:"
        forgotten = 0
        async for raw in self.redis.scan_iter(match=f"{tenant}*}}:*:m", count=1000):
            hash_key = raw.decode() if isinstance(raw, bytes) else raw
            prefix = hash_key.removesuffix(":m")
            groups = [
                g.decode() if isinstance(g, bytes) else g
                async for g in self.redis.scan_iter(match=f"{_glob(prefix)}:z:*", count=1000)
            ]
            forgotten += int(await self._forget(keys=[hash_key, *groups], args=[participant_id]))
        return forgotten

    async def is_ready(self, keys: RunKeys, shape: str) -> bool:
        """Whether the run's mirror was loaded for this board shape."""
        found = await self.redis.get(keys.ready)
        return (
            found is not None and (found.decode() if isinstance(found, bytes) else found) == shape
        )

    async def load(
        self, keys: RunKeys, shape: str, standings: Iterable[tuple[str, Standing]]
    ) -> int:
        """Replace the run's mirror with `standings` (group, standing); the count loaded."""
        existing = [k async for k in self.redis.scan_iter(match=f"{_glob(keys.prefix)}:*")]
        if existing:
            for start in range(0, len(existing), 500):
                # UNLINK: a large set is freed in the background, not in Redis' thread.
                await self.redis.unlink(*existing[start : start + 500])
        count = 0
        chunk: list[tuple[str, Standing]] = []
        for item in standings:
            chunk.append(item)
            if len(chunk) >= _LOAD_CHUNK:
                count += await self._load_chunk(keys, chunk)
                chunk = []
        count += await self._load_chunk(keys, chunk)
        await self.redis.set(keys.ready, shape)
        return count

    async def _load_chunk(self, keys: RunKeys, chunk: list[tuple[str, Standing]]) -> int:
        if not chunk:
            return 0
        by_group: dict[str, dict[str, float]] = {}
        mapping: dict[str, str] = {}
        for group, standing in chunk:
            m = member(standing)
            by_group.setdefault(group, {})[m] = -standing.score
            mapping[standing.participant_id] = m
        async with self.redis.pipeline(transaction=False) as pipe:
            for group, scores in by_group.items():
                pipe.zadd(keys.group(group), scores)
            pipe.hset(keys.members, mapping=mapping)  # type: ignore[arg-type]
            await pipe.execute()
        return len(chunk)

    async def top(
        self, keys: RunKeys, group: str, offset: int, limit: int
    ) -> tuple[int, list[tuple[str, float]]]:
        """(participants in the group, the `limit` entries from rank `offset` + 1)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.group(group))
            pipe.zrange(keys.group(group), offset, offset + limit - 1, withscores=True)
            total, rows = await pipe.execute()
        return int(total), [(_participant(m), _value(s)) for m, s in rows]

    async def rank(
        self, keys: RunKeys, group: str, participant_id: str
    ) -> tuple[int, float, int] | None:
        """(0-based rank, value, participants in the group), or None when unranked."""
        found = await self._rank(keys=[keys.members, keys.group(group)], args=[participant_id])
        if found is None:
            return None
        rank, score, total = found
        return int(rank), _value(score), int(total)

    async def around(
        self, keys: RunKeys, group: str, participant_id: str, k: int
    ) -> tuple[int, list[tuple[str, float]], int] | None:
        """(0-based rank of the first entry, the entries from K above to K below the
        participant, participants in the group), or None when unranked."""
        found = await self._around(keys=[keys.members, keys.group(group)], args=[participant_id, k])
        if found is None:
            return None
        first, flat, total = found
        rows = [(_participant(flat[i]), _value(flat[i + 1])) for i in range(0, len(flat), 2)]
        return int(first), rows, int(total)

    async def ranks_of(
        self, keys: RunKeys, group: str, participant_ids: Sequence[str]
    ) -> dict[str, int]:
        """0-based ranks of those of `participant_ids` ranked in the group."""
        if not participant_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in participant_ids:
                await self._rank(
                    keys=[keys.members, keys.group(group)],
                    args=[pid],
                    client=pipe,  # type: ignore[arg-type]
                )
            found = await pipe.execute()
        return {pid: int(f[0]) for pid, f in zip(participant_ids, found, strict=True) if f}


def _glob(text: str) -> str:
    """`text` with glob metacharacters escaped, for SCAN MATCH."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
