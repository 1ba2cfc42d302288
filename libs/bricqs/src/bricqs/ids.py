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
from typing import Final

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# Every pair of base32 digits, so a number is encoded 10 bits at a time rather than 5.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


# Random bits come from the kernel 4 KiB at a time, not a few bytes an id: os.urandom drops
# the GIL for its system call, and in a process with other threads (Granian's, the metrics
# server's) getting it back is what cost, on ingest's hot path (`bench.loops` measures it).
# Each chunk becomes base32 digits at once, in C (one byte translation: a random byte's low
# five bits, uniform since 256 is a multiple of 32, name its digit), so an id's 80 random
# bits are 16 of those digits, with no arithmetic per id.
_ENTROPY_CHUNK = 4096
_TO_DIGIT = bytes(_ALPHABET.encode()[byte & 31] for byte in range(256))


class _Digits:
    """The random digits not handed out yet, and the time digits of the latest
    millisecond an id was made in (a batch makes many ids in the same millisecond).

    State on an instance, not in module globals: compiled (mypyc), an attribute is a field
    of a struct, where a global that is assigned to is a dictionary lookup."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.random = ""
        self.taken = 0
        self.latest: tuple[int, str] = (-1, "")
        """(millisecond, its digits): one tuple, so a thread never reads one millisecond's
        digits with another's."""


_digits: Final = _Digits()


def _forget_entropy() -> None:
    # A forked child (a Granian worker, say) must never hand out its parent's digits again.
    _digits.lock, _digits.random, _digits.taken = threading.Lock(), "", 0


os.register_at_fork(after_in_child=_forget_entropy)


def _random_digits() -> str:
    """16 random Crockford base32 digits: 80 random bits."""
    state = _digits
    with state.lock:  # two threads must never take the same digits
        start = state.taken
        if start + 16 > len(state.random):
            state.random = os.urandom(_ENTROPY_CHUNK).translate(_TO_DIGIT).decode("ascii")
            start = 0
        state.taken = start + 16
        return state.random[start : start + 16]


def _time_digits(ms: int) -> str:
    """`_time_part(ms)`, made once per millisecond."""
    latest_ms, digits = _digits.latest
    if latest_ms != ms:
        digits = _time_part(ms)
        _digits.latest = (ms, digits)
    return digits


def ulid(now_ms: int | None = None) -> str:
    """A new 26-character ULID string."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return _time_digits(ms) + _random_digits()


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


def _time_part(ms: int) -> str:
    """The 10 digits of a ULID's 48-bit time (ms since the epoch)."""
    pairs = _PAIRS
    return "".join(
        [
            pairs[(ms >> 40) & 1023],
            pairs[(ms >> 30) & 1023],
            pairs[(ms >> 20) & 1023],
            pairs[(ms >> 10) & 1023],
            pairs[ms & 1023],
        ]
    )


def _encode(ms: int, entropy: bytes) -> str:
    """The ULID of 48 bits of time and 80 of entropy, as three numbers of at most 50 bits
    (time, and each half of the entropy): no arithmetic on a 128-bit number, which a
    compiled module does much more slowly than on numbers that fit a machine word."""
    high = int.from_bytes(entropy[:5], "big")
    low = int.from_bytes(entropy[5:], "big")
    pairs = _PAIRS
    return _time_part(ms) + "".join(
        [
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
