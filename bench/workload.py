"""The events a benchmark sends: the rule benchmark's mix (purchases, levels, logins) over
5,000 participants, as request bodies or as stream envelopes. Seeded, so runs compare."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from bricqs.ids import new_event_id
from bricqs.schemas import Envelope, encode_envelope

# The fact types of the mix (the 20 benchmark rules in bench/rule_engine.py use them).
BUY = "custom.purchase_completed"
LEVEL = "custom.level_completed"
LOGIN = "custom.login"
PARTICIPANTS = 5_000


def events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """`n` public events (the Events API's JSON objects), no timestamps or keys."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.choices([BUY, LEVEL, LOGIN], weights=[6, 3, 1])[0]
        if kind == BUY:
            props: dict[str, Any] = {
                "amount": round(rng.uniform(1, 200), 2),
                "currency": rng.choice(["USD", "EUR"]),
                "product_id": f"prod_{rng.randrange(50)}",
                "tags": rng.sample(["vip", "sale", "new"], k=rng.randrange(3)),
            }
        elif kind == LEVEL:
            props = {
                "level": rng.randrange(1, 30),
                "score": rng.randrange(10_000),
                "time_seconds": rng.randrange(30, 600),
            }
        else:
            props = {"device": rng.choice(["ios", "android", "web"])}
        out.append(
            {
                "event_name": kind.removeprefix("custom."),
                "participant_id": f"user_{rng.randrange(PARTICIPANTS)}",
                "properties": props,
            }
        )
    return out


def single_bodies(n: int, seed: int = 1) -> list[bytes]:
    """Bodies for POST /ingest/events (and /sync)."""
    return [json.dumps(e, separators=(",", ":")).encode() for e in events(n, seed)]


def batch_bodies(n: int, size: int = 100, seed: int = 2) -> list[bytes]:
    """Bodies for POST /ingest/events/batch, `size` events each."""
    pool = events(n * size, seed)
    return [
        json.dumps({"events": pool[i * size : (i + 1) * size]}, separators=(",", ":")).encode()
        for i in range(n)
    ]


def envelopes(project_id: str, n: int, seed: int = 3) -> list[bytes]:
    """Stream entries as ingest writes them, spread over the last 30 days."""
    now = datetime.now(UTC)
    rng = random.Random(seed)
    out = []
    for event in events(n, seed):
        occurred = now - timedelta(seconds=rng.randrange(30 * 86_400))
        out.append(
            encode_envelope(
                Envelope(
                    event_id=new_event_id(),
                    project_id=project_id,
                    environment="live",
                    event_name=event["event_name"],
                    participant_id=event["participant_id"],
                    properties=event["properties"],
                    occurred_at=occurred,
                    received_at=now,
                )
            )
        )
    return out
