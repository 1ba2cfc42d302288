"""Names and placement of the event streams in Redis, and the atomic enqueue script.

Each shard is one stream with its own hash tag, `bricqs:events:{N}`, so shards can live
on different Redis Cluster nodes. An event goes to the shard of `(project, participant)`;
its idempotency key is stored under the same hash tag, which lets one Lua script check
the key, XADD and remember the key atomically on a single node. Each shard also has a
dead-letter stream under the same hash tag, holding `DeadLetter` records, so moving an
entry there and acknowledging it is one MULTI on one node.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from bricqs.schemas import ENVELOPE_FIELD

STREAM_PREFIX = "bricqs:events"
CONSUMER_GROUP = "processors"
IDEMPOTENCY_TTL_SECONDS = 24 * 3600


def stream_key(shard: int) -> str:
    """The stream of one shard."""
    return f"{STREAM_PREFIX}:{{{shard}}}"


def dead_letter_key(shard: int) -> str:
    """The dead-letter stream of one shard (same hash tag, so moves are atomic)."""
    return f"{STREAM_PREFIX}:{{{shard}}}:dlq"


def shard_of(stream: str) -> int:
    """The shard number of an event stream or dead-letter stream key."""
    return int(stream[stream.index("{") + 1 : stream.index("}")])


@dataclass(frozen=True)
class DeadLetter:
    """An entry given up on, as the dead-letter stream holds it.

    The original bytes are kept under the envelope field, untouched, so a replay puts
    exactly what ingest wrote back on the stream.
    """

    payload: bytes
    """The original value of the envelope field (empty if the entry had none)."""
    reason: str
    """Why: `decode_error`, `rejected` or `max_deliveries`, then `: ` and details."""
    stream: str
    """The stream the entry came from."""
    message_id: str
    """Its id on that stream."""
    deliveries: int
    """How often it had been delivered to the consumer group."""

    def fields(self) -> dict[bytes, bytes]:
        """The fields of the dead-letter entry, for XADD."""
        return {
            ENVELOPE_FIELD: self.payload,
            b"reason": self.reason.encode(),
            b"stream": self.stream.encode(),
            b"message_id": self.message_id.encode(),
            b"deliveries": str(self.deliveries).encode(),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes]) -> DeadLetter:
        """Read a dead-letter entry back (as XRANGE returns it)."""
        return cls(
            payload=fields.get(ENVELOPE_FIELD, b""),
            reason=fields.get(b"reason", b"").decode(errors="replace"),
            stream=fields.get(b"stream", b"").decode(errors="replace"),
            message_id=fields.get(b"message_id", b"").decode(errors="replace"),
            deliveries=int(fields.get(b"deliveries", b"0") or 0),
        )


def idempotency_redis_key(shard: int, project_id: str, environment: str, key: str) -> str:
    """Where ingest remembers an idempotency key for 24 h."""
    return f"bricqs:idem:{{{shard}}}:{project_id}:{environment}:{key}"


def shard_for(project_id: str, participant_id: str, shards: int) -> int:
    """The shard of a participant: stable across processes and restarts."""
    if shards == 1:
        return 0
    return zlib.crc32(f"{project_id}\x00{participant_id}".encode()) % shards


def rate_bucket_key(shard: int, key_id: str) -> str:
    """The token bucket of one API key on one shard (same hash tag as the stream)."""
    return f"bricqs:rl:{{{shard}}}:{key_id}"


def rate_permit_key(shard: int, request_id: str) -> str:
    """Proof, for the rest of one pipeline, that a batch's tokens were taken."""
    return f"bricqs:rl:{{{shard}}}:permit:{request_id}"


# One script, so that rate limit, idempotency and XADD are atomic on the shard's node.
# KEYS are the stream then, as ARGV[1] ("layout") says, the idempotency key (i), the
# token bucket (b) and the batch permit (p); with "r" in the layout KEYS are the bucket
# and the permit, and the script only takes `cost` tokens and sets the permit.
# ARGV: 1 layout, 2 envelope, 3 payload hash, 4 event_id, 5 idempotency TTL s,
#       6 tokens per second, 7 burst, 8 cost.
# Replies: {1, message_id, remaining} enqueued; {0, "hash|message_id|event_id"} key held;
#          {2, retry_after_ms, remaining} rate limited; {3} permit missing (the batch was
#          limited); {4, remaining} tokens reserved.
ENQUEUE_SCRIPT = """
local layout = ARGV[1]
local function take(bucket)
  local rate, burst, cost = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local state = redis.call('HMGET', bucket, 'tokens', 'ts')
  local tokens = tonumber(state[1]) or burst
  local ts = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  local ok = tokens >= cost
  if ok then tokens = tokens - cost end
  redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
  if ok then return true, math.floor(tokens), 0 end
  return false, math.floor(tokens), math.ceil((cost - tokens) * 1000 / rate)
end
if string.find(layout, 'r', 1, true) then
  local ok, remaining, wait = take(KEYS[1])
  if not ok then return {2, wait, remaining} end
  redis.call('SET', KEYS[2], '1', 'PX', 10000)
  return {4, remaining}
end
local k, idem, bucket, permit = 2, nil, nil, nil
if string.find(layout, 'i', 1, true) then idem = KEYS[k]; k = k + 1 end
if string.find(layout, 'b', 1, true) then bucket = KEYS[k]; k = k + 1 end
if string.find(layout, 'p', 1, true) then permit = KEYS[k]; k = k + 1 end
if permit and redis.call('EXISTS', permit) == 0 then return {3} end
if idem then
  local held = redis.call('GET', idem)
  if held then return {0, held} end
end
local remaining = -1
if bucket then
  local ok, left, wait = take(bucket)
  if not ok then return {2, wait, left} end
  remaining = left
end
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[2])
if idem then
  redis.call('SET', idem, ARGV[3] .. '|' .. id .. '|' .. ARGV[4], 'EX', ARGV[5])
end
return {1, id, remaining}
"""

# Several plain envelopes (no idempotency key, no limit, no permit) that follow each other
# in one pipeline, for one stream: XADDed in order by one script, one reply for all. The
# shebang makes Redis (7+) check for OOM before the script runs, so a full Redis refuses
# the whole run rather than part of it. KEYS[1] the stream; ARGV the envelopes. Replies
# the message ids, in order.
XADD_ALL_SCRIPT = """#!lua
local ids = {}
for i = 1, #ARGV do
  ids[i] = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
end
return ids
"""
