"""Prefixed, time-ordered unique ids (`evt_…`, `fact_…`).

The body is a ULID: 48 bits of milliseconds since the epoch and 80 random bits, in
Crockford base32, so ids sort by creation time and never collide in practice across
processes. The custom fact of an event shares its event's body (`fact_<body>`), which
makes the fact id a pure function of the event id: a redelivered or replayed event
derives the very same fact.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# Every pair of base32 digits, so a ULID is 13 lookups of 10 bits rather than 26 of 5
# (ids are made on the hot path of every event).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


# Random bits come from the kernel 4 KiB at a time, not 10 bytes an id: os.urandom drops
# the GIL for its system call, and in a process with other threads (Granian's, the metrics
# server's) getting it back is what cost, on ingest's hot path (`bench.loops` measures it).
_ENTROPY_CHUNK = 4096
_entropy = b""
_entropy_at = 0
_entropy_lock = threading.Lock()


def _forget_entropy() -> None:
    # A forked child (a Granian worker, say) must never hand out its parent's bytes again.
    global _entropy, _entropy_at, _entropy_lock
    _entropy, _entropy_at, _entropy_lock = b"", 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_entropy)


def _random_80_bits() -> bytes:
    global _entropy, _entropy_at
    with _entropy_lock:  # two threads must never take the same bytes
        start = _entropy_at
        if start + 10 > len(_entropy):
            _entropy, start = os.urandom(_ENTROPY_CHUNK), 0
        _entropy_at = start + 10
        return _entropy[start : start + 10]


def ulid(now_ms: int | None = None) -> str:
    """A new 26-character ULID string."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return _encode(ms, _random_80_bits())


def new_event_id() -> str:
    """A new event id, `evt_` + ULID."""
    return "evt_" + ulid()


def fact_id_for_event(event_id: str) -> str:
    """The id of the custom fact derived from `event_id`."""
    return "fact_" + event_id.removeprefix("evt_")


def new_fact_id() -> str:
    """A new id for a fact that is not an event's custom fact (system facts)."""
    return "fact_" + ulid()


def timestamp_ms(prefixed_id: str) -> int:
    """The creation time (ms since the epoch) encoded in a prefixed id."""
    body = prefixed_id.rsplit("_", 1)[-1][:10]
    value = 0
    for char in body:
        value = value * 32 + _ALPHABET.index(char)
    return value


def derived_ulid(ms: int, key: str) -> str:
    """A ULID that is a pure function of a time (ms since the epoch) and a key: the id of
    something the clock makes (an expiry, say), the same however often it is made."""
    return _encode(ms, hashlib.blake2b(key.encode(), digest_size=10).digest())


def _encode(ms: int, entropy: bytes) -> str:
    """The ULID of 48 bits of time and 80 of entropy, as three numbers of at most 50 bits
    (time, and each half of the entropy): no arithmetic on a 128-bit number, which a
    compiled module does much more slowly than on numbers that fit a machine word."""
    high = int.from_bytes(entropy[:5], "big")
    low = int.from_bytes(entropy[5:], "big")
    pairs = _PAIRS
    return "".join(
        [
            pairs[(ms >> 40) & 1023],
            pairs[(ms >> 30) & 1023],
            pairs[(ms >> 20) & 1023],
            pairs[(ms >> 10) & 1023],
            pairs[ms & 1023],
            pairs[(high >> 30) & 1023],
            pairs[(high >> 20) & 1023],
            pairs[(high >> 10) & 1023],
            pairs[high & 1023],
            pairs[(low >> 30) & 1023],
            pairs[(low >> 20) & 1023],
            pairs[(low >> 10) & 1023],
            pairs[low & 1023],
        ]
    )
