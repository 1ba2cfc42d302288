"""The fault suite's clients: threads that send single, batch and sync events at a steady
pace and record what they were told.

Clients behave like real ones: an event with an idempotency key answered 503 is sent
again, same key and payload, after `Retry-After`; an event without a key answered 503 is
not accepted and not resent. A 503 does not prove that nothing was queued (Redis may have
run the XADD whose reply timed out), so such events may turn up stored: that is neither a
loss nor a duplicate, and the summary counts them.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.ingest.helpers import BATCH, EVENTS, SYNC

# Each client sends a request, then pauses PAUSE seconds.
PAUSE = 0.06
BATCH_SIZE = 5
PARTICIPANTS = 25
# A hang would hit this; a 503 comes within REDIS_TIMEOUT_MS (or DATABASE_TIMEOUT_MS for
# the sync endpoint and uncached keys), well inside it.
CLIENT_TIMEOUT = 8.0
# A keyed event is resent for at most this long before the client gives up on it.
GIVE_UP_SECONDS = 30.0
# The longest a client can take to stop once told to: it finishes the request in hand,
# resending a keyed one until it gets in or gives up.
STOP_BOUND = GIVE_UP_SECONDS + 2 * CLIENT_TIMEOUT


@dataclass
class Sent:
    """One event as a client sent it, and how that ended."""

    seq: str
    """Unique per event, in its properties: how it is found in PostgreSQL."""
    body: dict[str, Any]
    endpoint: str
    keyed: bool
    outcome: str = "pending"
    """accepted (a 2xx), unavailable (503 or no answer, not resent), gave_up (keyed,
    still failing after GIVE_UP_SECONDS)."""
    event_id: str | None = None
    message_id: str | None = None
    attempts: int = 0
    answered_at: float = 0.0
    """Seconds into the run of the last answer (to line losses up with the faults)."""


@dataclass
class Traffic:
    """Everything the clients saw, shared by their threads (appends and counters under a
    lock)."""

    sent: list[Sent] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    """Answers by status (`503 queue_unavailable`, ...) and failures without an answer."""
    slowest: float = 0.0
    errors: list[str] = field(default_factory=list)
    """Answers that no fault explains (a 4xx, a rejected event in a batch)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    def record(self, label: str, seconds: float) -> None:
        with self.lock:
            self.statuses[label] += 1
            self.slowest = max(self.slowest, seconds)

    def accepted(self) -> list[Sent]:
        with self.lock:
            return [s for s in self.sent if s.outcome == "accepted"]


def event_body(rng: random.Random, seq: str, keyed: bool, start: datetime) -> dict[str, Any]:
    """An event with its own timestamp (spread over nine days, so streaks and windows
    matter) and, if keyed, an idempotency key."""
    name = rng.choice(["login", "purchase", "purchase", "view"])
    properties: dict[str, Any] = {"seq": seq}
    if name == "purchase":
        properties |= {"amount": rng.randrange(1, 50), "sku": rng.choice("abcdefg")}
    at = start + timedelta(seconds=rng.randrange(0, 9 * 86_400))
    body: dict[str, Any] = {
        "event_name": name,
        "participant_id": f"user_{rng.randrange(PARTICIPANTS)}",
        "properties": properties,
        "timestamp": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    if keyed:
        body["idempotency_key"] = f"fault-{seq}"
    return body


class Client(threading.Thread):
    """Sends single, batch and sync requests at a steady pace until stopped; resends keyed
    events answered 503 after Retry-After, as a real client would."""

    def __init__(self, number: int, base: str, key: str, traffic: Traffic) -> None:
        super().__init__(daemon=True, name=f"client-{number}")
        self.number = number
        self.base = base
        self.key = key
        self.traffic = traffic
        self.rng = random.Random(number)
        self.halt = threading.Event()
        self.start_at = datetime.now(UTC) - timedelta(days=9, minutes=5)
        self.count = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(
                base_url=self.base, headers={"X-API-Key": self.key}, timeout=CLIENT_TIMEOUT
            ) as http:
                while not self.halt.is_set():
                    self.send_one(http)
                    time.sleep(PAUSE)
        except BaseException as exc:
            self.failure = exc
            raise

    def new(self, endpoint: str, keyed: bool) -> Sent:
        self.count += 1
        seq = f"{self.number}-{self.count}"
        sent = Sent(seq, event_body(self.rng, seq, keyed, self.start_at), endpoint, keyed)
        with self.traffic.lock:
            self.traffic.sent.append(sent)
        return sent

    def send_one(self, http: httpx.Client) -> None:
        roll = self.rng.random()
        keyed = self.rng.random() < 0.5
        if roll < 0.5:
            events = [self.new("single", keyed)]
            path, payload = EVENTS, events[0].body
        elif roll < 0.65:
            events = [self.new("sync", keyed)]
            path, payload = SYNC, events[0].body
        else:
            events = [self.new("batch", keyed) for _ in range(BATCH_SIZE)]
            path, payload = BATCH, {"events": [e.body for e in events]}
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while True:
            for sent in events:
                sent.attempts += 1
            started = time.monotonic()
            try:
                response = http.post(path, json=payload)
            except httpx.TimeoutException:
                self.traffic.record(
                    "no answer within the client timeout", time.monotonic() - started
                )
                retry_after = 1.0
            except httpx.TransportError as exc:
                self.traffic.record(f"transport error {type(exc).__name__}", 0.0)
                retry_after = 1.0
            else:
                for sent in events:
                    sent.answered_at = self.traffic.now()
                status = response.status_code
                code = ""
                if status >= 400 and "json" in response.headers.get("content-type", ""):
                    code = " " + str(response.json().get("code", ""))
                self.traffic.record(f"{status}{code}", time.monotonic() - started)
                if 200 <= status < 300:
                    self.accepted(events, response.json(), path)
                    return
                if status != 503:
                    with self.traffic.lock:
                        self.traffic.errors.append(f"{path} {status}: {response.text[:300]}")
                    for sent in events:
                        sent.outcome = f"answered {status}"
                    return
                retry_after = float(response.headers.get("Retry-After", "1"))
            if not events[0].keyed:
                for sent in events:
                    sent.outcome = "unavailable"
                return
            if time.monotonic() > deadline:
                for sent in events:
                    sent.outcome = "gave_up"
                return
            time.sleep(min(retry_after, 1.0))

    def accepted(self, events: list[Sent], body: dict[str, Any], path: str) -> None:
        if path != BATCH:
            events[0].outcome, events[0].event_id = "accepted", body["event_id"]
            events[0].message_id = body.get("message_id")
            return
        for sent, result in zip(events, body["results"], strict=True):
            if result["status"] in ("accepted", "duplicate"):
                sent.outcome, sent.event_id = "accepted", result["event_id"]
                sent.message_id = result["message_id"]
            else:
                sent.outcome = "rejected"
                with self.traffic.lock:
                    self.traffic.errors.append(f"batch item rejected: {result}")
