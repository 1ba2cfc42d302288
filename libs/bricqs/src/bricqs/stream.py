"""Names and placement of the event streams in Redis, and the atomic enqueue script.

Each shard is one stream with its own hash tag, `bricqs:events:{N}`, so shards can live
on different Redis Cluster nodes. An event goes to the shard of `(project, participant)`;
its idempotency key is stored under the same hash tag, which lets one Lua script check
the key, XADD and remember the key atomically on a single node. Each shard also has a
dead-letter stream under the same hash tag, holding `DeadLetter` records, so moving an
entry there and acknowledging it is one MULTI on one node. Events sent as a historical
import go to the shard's historical stream, `bricqs:events:{N}:historical`, under the same
hash tag, which the processor reads only with what live traffic leaves (docs/import.md).
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


def historical_stream_key(shard: int) -> str:
    """The stream of one shard's historical imports (same hash tag as its live stream)."""
    return f"{STREAM_PREFIX}:{{{shard}}}:historical"


def event_stream_key(shard: int, *, historical: bool) -> str:
    """The stream an event of `shard` is queued on: live or historical."""
    return historical_stream_key(shard) if historical else stream_key(shard)


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


def replay_stream(shard: int, letter: DeadLetter) -> str:
    """Where a dead letter of `shard` goes back when replayed: the stream it came from,
    live or historical (so a replayed import keeps an import's place behind live traffic)."""
    if letter.stream == historical_stream_key(shard):
        return letter.stream
    return stream_key(shard)


def idempotency_redis_key(shard: int, project_id: str, environment: str, key: str) -> str:
    """Where ingest remembers an idempotency key for 24 h."""
    return f"bricqs:idem:{{{shard}}}:{project_id}:{environment}:{key}"


def shard_for(project_id: str, participant_id: str, shards: int) -> int:
    """The shard of a participant: stable across processes and restarts."""
    if shards == 1:
        return 0
    return zlib.crc32(f"{project_id}\x00{participant_id}".encode()) % shards


def rate_bucket_key(key_id: str) -> str:
    """The token bucket of one API key: one per key whatever the number of shards, under
    its own hash tag (tokens are taken before, and apart from, the per-shard enqueue)."""
    return f"bricqs:rl:{{{key_id}}}"


def import_pace_key(key_id: str) -> str:
    """The bucket pacing one API key's historical imports (`bricqs_ingest.ratelimit`),
    under the key's rate-limit hash tag."""
    return f"{rate_bucket_key(key_id)}:import"


# Atomic on the shard's node: check the idempotency key, XADD, remember the key.
# KEYS: the stream, then the idempotency key if any. ARGV: 1 envelope, 2 payload hash,
# 3 event_id, 4 idempotency TTL s.
# Replies: {1, message_id} enqueued; {0, "hash|message_id|event_id"} the key is held.
ENQUEUE_SCRIPT = """
local idem = KEYS[2]
if idem then
  local held = redis.call('GET', idem)
  if held then return {0, held} end
end
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
if idem then
  redis.call('SET', idem, ARGV[2] .. '|' .. id .. '|' .. ARGV[3], 'EX', ARGV[4])
end
return {1, id}
"""

# A token bucket: take `cost` tokens (a negative cost gives tokens back, up to `burst`).
# KEYS[1] the bucket. ARGV: 1 tokens per second, 2 burst, 3 cost.
# Replies: {1, remaining} taken; {0, retry_after_ms, remaining} not enough tokens.
TAKE_TOKENS_SCRIPT = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local ok = tokens >= cost
if ok then tokens = math.min(burst, tokens - cost) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
if ok then return {1, math.floor(tokens)} end
return {0, math.ceil((cost - tokens) * 1000 / rate), math.floor(tokens)}
"""

# Several plain envelopes (no idempotency key) that follow each other
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


def chore_lease_key(chore: str) -> str:
    """The lease that lets one processor replica at a time run a cluster-wide chore
    (purging, trimming), under its own hash tag."""
    return f"bricqs:lease:{{{chore}}}"
