"""Ids are prefixed and time-ordered; keys have the documented shape and only hashes are kept."""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

from hypothesis import given
from hypothesis import strategies as st

from bricqs.ids import derived_ulid, fact_id_for_event, new_event_id, timestamp_ms, ulid
from bricqs.keys import display_prefix, generate_key, hash_key, key_environment


def test_event_ids_are_prefixed_unique_and_sort_by_creation_time() -> None:
    ids = []
    for _ in range(3):
        ids.append(new_event_id())
        time.sleep(0.002)
    assert all(i.startswith("evt_") and len(i) == 30 for i in ids)
    assert ids == sorted(ids)
    assert len({new_event_id() for _ in range(10_000)}) == 10_000


@given(st.integers(min_value=0, max_value=2**48 - 1))
def test_ulid_encodes_its_millisecond_timestamp(ms: int) -> None:
    assert timestamp_ms("evt_" + ulid(ms)) == ms


@given(st.integers(min_value=0, max_value=2**48 - 2))
def test_ulids_of_later_milliseconds_sort_later(ms: int) -> None:
    assert ulid(ms) < ulid(ms + 1)


@given(st.integers(min_value=0, max_value=2**48 - 1), st.text())
def test_a_derived_ulid_is_the_ulid_of_its_time_and_its_key_s_digest(ms: int, key: str) -> None:
    """The id a clock-made fact was stored with must be made again, after an upgrade too:
    so the encoding is checked against the ULID's definition (128 bits, 26 Crockford
    base32 digits), not against itself."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    digest = hashlib.blake2b(key.encode(), digest_size=10).digest()
    value = (ms << 80) | int.from_bytes(digest, "big")
    expected = "".join(alphabet[(value >> (5 * i)) & 31] for i in range(25, -1, -1))
    assert derived_ulid(ms, key) == expected


def test_custom_fact_id_is_a_function_of_the_event_id() -> None:
    event_id = new_event_id()
    assert fact_id_for_event(event_id) == "fact_" + event_id[4:]
    assert fact_id_for_event(event_id) == fact_id_for_event(event_id)


def test_generated_keys_have_the_documented_shape() -> None:
    live, test = generate_key("live"), generate_key("test")
    assert key_environment(live) == "live"
    assert key_environment(test) == "test"
    assert len(live) == len("bq_live_") + 40
    assert display_prefix(live) == live[:12]
    assert generate_key("live") != live


def test_key_hash_is_sha256_and_not_the_key() -> None:
    key = generate_key("live")
    assert len(hash_key(key)) == 32
    assert key.encode() not in hash_key(key)


def test_malformed_keys_have_no_environment() -> None:
    for key in [
        "",
        "bq_live_",
        "bq_live_abc",
        "bq_prod_" + "a" * 40,
        "bq_live_" + "a" * 31,
        "bq_live_" + "é" * 40,
        "x" + generate_key("live"),
    ]:
        assert key_environment(key) is None, key


def test_a_ulids_random_part_is_crockford_digits_each_position_taking_all_32() -> None:
    """Random digits come from a byte translation of the kernel's bytes: every position
    must be a Crockford base32 digit, and each must take every one of the 32 (a table
    that skipped or repeated digits would give fewer than 80 random bits)."""
    alphabet = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    made = [ulid() for _ in range(2_000)]  # more than one chunk of entropy
    assert all(len(i) == 26 and set(i) <= alphabet for i in made)
    assert all({i[10 + n] for i in made} == alphabet for n in range(16))


def _randomness(ids: list[str]) -> set[str]:
    """The random part of ULIDs (the last 16 of 26 characters: 80 bits)."""
    return {i[-16:] for i in ids}


def test_a_forked_child_never_repeats_its_parents_random_bits() -> None:
    # Random bits are read from the kernel in chunks: a child forked with part of a chunk
    # unread (a Granian worker) must not hand out the bytes its parent will use.
    ulid()  # the parent now holds a chunk, nearly all of it unread
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os.close(reader)
        os.write(writer, ",".join(ulid() for _ in range(100)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        theirs = pipe.read().split(",")
    os.waitpid(child, 0)
    ours = [ulid() for _ in range(100)]
    assert len(theirs) == 100
    assert _randomness(ours).isdisjoint(_randomness(theirs))


def test_ids_made_on_many_threads_at_once_are_unique() -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        batches = list(pool.map(lambda _: [ulid() for _ in range(5_000)], range(8)))
    made = [i for batch in batches for i in batch]
    assert len(_randomness(made)) == len(made)
