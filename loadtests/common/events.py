"""Realistic traffic for the Events API: many participants (a few very active, most
seldom seen), a catalogue of event names with varied properties, some client timestamps
and idempotency keys, some retries of the same key (duplicates), and some invalid events
the service must refuse with 422."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

PARTICIPANTS = 20_000


def participant(rng: random.Random) -> str:
    """A participant id; Pareto-distributed, so a few are very active."""
    return f"user_{min(PARTICIPANTS - 1, int(rng.paretovariate(1.2)) - 1)}"


def _properties(rng: random.Random, name: str) -> dict[str, Any]:
    if name == "purchase_completed":
        return {
            "amount": round(rng.uniform(1, 500), 2),
            "currency": rng.choice(["USD", "EUR", "GBP"]),
            "product_id": f"prod_{rng.randrange(500)}",
            "items": [
                {"sku": f"sku_{rng.randrange(2000)}", "qty": rng.randrange(1, 4)}
                for _ in range(rng.randrange(1, 4))
            ],
            "tags": rng.sample(["vip", "sale", "new", "gift"], k=rng.randrange(3)),
            "coupon": rng.choice([None, "SPRING", "WELCOME10"]),
        }
    if name == "level_completed":
        return {
            "level": rng.randrange(1, 60),
            "score": rng.randrange(100_000),
            "time_seconds": round(rng.uniform(10, 900), 1),
            "perfect": rng.random() < 0.1,
        }
    if name == "page_view":
        return {
            "path": rng.choice(["/", "/pricing", "/docs", "/blog/launch", "/account"]),
            "referrer": rng.choice(["", "https://example.org", "newsletter"]),
            "viewport": {"w": rng.choice([390, 768, 1440]), "h": rng.choice([844, 1024, 900])},
        }
    if name == "add_to_cart":
        return {"product_id": f"prod_{rng.randrange(500)}", "quantity": rng.randrange(1, 5)}
    return {"device": rng.choice(["ios", "android", "web"]), "version": f"3.{rng.randrange(9)}"}


EVENT_NAMES = ["page_view", "add_to_cart", "purchase_completed", "level_completed", "login"]
EVENT_WEIGHTS = [40, 15, 10, 20, 15]


def event(rng: random.Random, *, idempotency_share: float = 0.1) -> dict[str, Any]:
    """One valid event; some with a client timestamp, some with an idempotency key."""
    name = rng.choices(EVENT_NAMES, EVENT_WEIGHTS)[0]
    body: dict[str, Any] = {
        "event_name": name,
        "participant_id": participant(rng),
        "properties": _properties(rng, name),
    }
    if rng.random() < 0.3:
        moment = datetime.now(UTC) - timedelta(seconds=rng.uniform(0, 86_400))
        body["timestamp"] = moment.isoformat()
    if rng.random() < idempotency_share:
        body["idempotency_key"] = f"lt-{uuid.uuid4().hex}"
    return body


def invalid_event(rng: random.Random) -> dict[str, Any]:
    """An event the Events API must refuse (422), broken in one of several ways."""
    body = event(rng, idempotency_share=0)
    flaw = rng.randrange(6)
    if flaw == 0:
        del body["participant_id"]
    elif flaw == 1:
        body["event_name"] = "_starts with an underscore"
    elif flaw == 2:
        body["timestamp"] = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    elif flaw == 3:
        body["properties"] = ["not", "an", "object"]
    elif flaw == 4:
        body["idempotency_key"] = "has spaces in it"
    else:
        body["event_name"] = "x" * 101
    return body


def batch(rng: random.Random, *, invalid_share: float = 0.02) -> list[dict[str, Any]]:
    """10-100 events, a few of them invalid; the first is always valid, so the batch is
    accepted (202) with per-event results."""
    events = [event(rng, idempotency_share=0.05) for _ in range(rng.randrange(10, 101))]
    for i in range(1, len(events)):
        if rng.random() < invalid_share:
            events[i] = invalid_event(rng)
    return events
