"""`bricqs-admin dlq list` and `dlq replay`: the dead-letter streams (entries the processor
gave up on), listed with the events they hold, and moved back onto their event streams."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import msgspec

from bricqs.redis_connect import RedisClient, connect_redis
from bricqs.schemas import ENVELOPE_FIELD, decode_envelope
from bricqs.stream import DeadLetter, dead_letter_key, replay_stream

Adder = Callable[..., argparse.ArgumentParser]


class DeadLetterAdminError(Exception):
    """The dead letters named cannot be replayed; the message says why."""


# KEYS[1] dead-letter stream, KEYS[2] event stream of the same shard; ARGV[1] entry id,
# ARGV[2] the envelope field.
# Moves the entry's original payload back onto the event stream and deletes the dead
# letter, atomically, so replaying one id twice (even at once) enqueues it once.
# Returns the new message id, or false when there is no such dead letter.
REPLAY_SCRIPT = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local fields = found[1][2]
local payload = ''
for i = 1, #fields, 2 do
  if fields[i] == ARGV[2] then payload = fields[i + 1] end
end
redis.call('XDEL', KEYS[1], ARGV[1])
return redis.call('XADD', KEYS[2], '*', ARGV[2], payload)
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _redis(args: argparse.Namespace) -> RedisClient:
    return connect_redis(args.redis_url, cluster=args.redis_cluster, timeout_s=10)


def _describe(shard: int, entry_id: str, letter: DeadLetter) -> dict[str, Any]:
    """A dead letter for people and scripts, with the event it holds if it decodes."""
    event: dict[str, Any] | None = None
    try:
        envelope = decode_envelope(letter.payload)
    except msgspec.DecodeError:
        pass
    else:
        event = {
            "event_id": envelope.event_id,
            "project_id": envelope.project_id,
            "environment": envelope.environment,
            "event_name": envelope.event_name,
            "participant_id": envelope.participant_id,
            "received_at": envelope.received_at,
        }
    return {
        "id": entry_id,
        "shard": shard,
        "reason": letter.reason,
        "stream": letter.stream,
        "message_id": letter.message_id,
        "deliveries": letter.deliveries,
        "payload_bytes": len(letter.payload),
        "event": event,
    }


async def cmd_dlq_list(args: argparse.Namespace) -> dict[str, Any]:
    """List every shard's dead letters, oldest first, with the events they hold."""
    entries = []
    async with _redis(args) as redis:
        for shard in range(args.shards):
            rows: Any = await redis.xrange(dead_letter_key(shard), count=args.limit)
            for entry_id, fields in rows:
                letter = DeadLetter.from_fields(fields)
                entries.append(_describe(shard, _text(entry_id), letter))
    lines = "\n".join(
        f"{e['id']}  shard {e['shard']}  deliveries {e['deliveries']}  "
        + (
            f"{e['event']['event_id']} {e['event']['event_name']}"
            if e["event"]
            else "(undecodable)"
        )
        + f"  {e['reason']}"
        for e in entries
    )
    return {"entries": entries, "message": lines or "the dead-letter streams are empty"}


async def cmd_dlq_replay(args: argparse.Namespace) -> dict[str, Any]:
    """Move the named dead letters (or all) back onto the streams they came from; every
    id must exist before any moves."""
    if not args.all and not args.ids:
        raise DeadLetterAdminError("name the dead-letter ids to replay, or pass --all")
    async with _redis(args) as redis:
        # Which ids live in which shard's dead-letter stream; all must exist before any moves.
        # (shard, id, the stream it goes back to)
        wanted: list[tuple[int, str, str]] = []
        for shard in range(args.shards):
            key = dead_letter_key(shard)
            ranges = [("-", "+")] if args.all else [(i, i) for i in args.ids]
            found: list[Any] = []
            for first, last in ranges:
                found += await redis.xrange(key, first, last) or []
            wanted += [
                (shard, _text(i), replay_stream(shard, DeadLetter.from_fields(fields)))
                for i, fields in found
            ]
        missing = sorted(set(args.ids) - {entry_id for _, entry_id, _ in wanted})
        if missing:
            raise DeadLetterAdminError(
                f"no dead letter with id {', '.join(missing)}; nothing replayed"
            )
        script: Any = redis.register_script(REPLAY_SCRIPT)
        replayed = []
        for shard, entry_id, stream in wanted:
            new_id = await script(
                keys=[dead_letter_key(shard), stream], args=[entry_id, ENVELOPE_FIELD]
            )
            if new_id is not None:  # else replayed by someone else meanwhile
                replayed.append({"id": entry_id, "shard": shard, "message_id": _text(new_id)})
    return {
        "replayed": replayed,
        "message": f"replayed {len(replayed)} dead letter(s) onto the event stream(s)",
    }


def add_dlq_commands(sub: Any, add: Adder) -> None:
    """Add `dlq list` and `dlq replay` to the admin command line (`add` makes a
    subcommand)."""
    dlq = add(sub, "dlq", help="dead-letter streams (entries the processor gave up on)")
    dlq.add_argument(
        "--shards",
        type=int,
        default=int(os.environ.get("STREAM_SHARDS") or 1),
        help="number of event streams (default: $STREAM_SHARDS or 1)",
    )
    dlq_sub = dlq.add_subparsers(dest="action", required=True)
    dlq_list = add(dlq_sub, "list", help="list dead letters, oldest first")
    dlq_list.add_argument("--limit", type=int, default=1000, help="most entries per shard")
    dlq_list.set_defaults(run=cmd_dlq_list, needs="redis")
    dlq_replay = add(
        dlq_sub,
        "replay",
        help="move dead letters back onto their event stream, to be processed again",
    )
    dlq_replay.add_argument("ids", nargs="*", help="dead-letter entry ids (from dlq list)")
    dlq_replay.add_argument("--all", action="store_true", help="replay every dead letter")
    dlq_replay.set_defaults(run=cmd_dlq_replay, needs="redis")
