"""Trimming an event stream below what every consumer group has acknowledged, and
pruning the consumers of processes that are gone.

`MAXLEN ~` would drop entries whether or not a group acknowledged them (SPEC §9). We
trim with `MINID` = the smallest, over all the groups on the stream (ours and any other,
a webhook dispatcher say), of the oldest pending id (or, with nothing pending, the
last-delivered id): every entry below it was delivered to every group and acknowledged.
A stream without groups is not trimmed at all, since nobody has read it yet. The bound
is computed and applied in one script, so no delivery or group change can slip between
the two.

The trim is approximate (`MINID ~`, whole macro nodes only, so a few entries below the
bound may stay until the next round) and capped (`LIMIT`): one call is a bounded amount
of work for Redis however far behind trimming is, and a round calls again until a call
removes nothing, letting other clients' commands in between.
"""

from __future__ import annotations

from typing import Any

from bricqs.redis_connect import RedisClient

# Most entries one trim call removes: Redis's own default for `~` (100 macro nodes of
# the default 100 entries). It must exceed a node's entries, or nothing is ever removed.
TRIM_LIMIT = 10_000

# KEYS[1] the stream; ARGV[1] the most entries to remove. Returns {entries trimmed, the
# MINID used} or {0, false}.
TRIM_SCRIPT = """
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok or #groups == 0 then return {0, false} end

local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function less(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end

local floor = nil
for _, group in ipairs(groups) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local bound = info['last-delivered-id']
  if info['pending'] > 0 then
    bound = redis.call('XPENDING', KEYS[1], info['name'])[2]
  end
  if floor == nil or less(bound, floor) then floor = bound end
end
return {redis.call('XTRIM', KEYS[1], 'MINID', '~', floor, 'LIMIT', ARGV[1]), floor}
"""


class StreamTrimmer:
    """Trims event streams safely; one instance per Redis client."""

    def __init__(self, redis: RedisClient, limit: int = TRIM_LIMIT) -> None:
        self._script: Any = redis.register_script(TRIM_SCRIPT)
        self._limit = limit

    async def trim(self, stream: str) -> int:
        """Trim `stream` below what every group acknowledged, at most `limit` entries
        (fewer when they do not fill whole nodes); return entries removed."""
        removed, _floor = await self._script(keys=[stream], args=[self._limit])
        return int(removed)


# KEYS[1] the stream; ARGV[1] the group, ARGV[2] minimum idle ms. Deletes consumers that
# hold nothing and have been idle longer than that. A consumer with pending entries is
# never deleted (XGROUP DELCONSUMER would orphan them): reclaiming empties it first.
PRUNE_SCRIPT = """
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
local removed = 0
for _, consumer in ipairs(consumers) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info['pending'] == 0 and info['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
"""


class ConsumerPruner:
    """Removes consumers of long-gone processes from the group, once they hold nothing."""

    def __init__(self, redis: RedisClient) -> None:
        self._script: Any = redis.register_script(PRUNE_SCRIPT)

    async def prune(self, stream: str, group: str, min_idle_ms: int) -> int:
        """Delete `group`'s empty consumers idle over `min_idle_ms`; how many."""
        return int(await self._script(keys=[stream], args=[group, min_idle_ms]))
