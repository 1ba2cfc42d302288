"""Fault injection: a steady event load through the real ingest service (Granian) and real
processor subprocesses while processors are SIGKILLed, Redis and PostgreSQL are restarted
and Redis is frozen (SIGSTOP); then a reconciliation.

What the run must show (issue 7): every event answered 2xx is stored exactly once, as an
event and its fact; every mechanic's totals equal a clean sequential replay of the same
events on a fresh tenant; ingest never answered 500 and never made a client wait past its
timeout. The run happens once per module (the `run` fixture); each test checks one part.

Clients behave like real ones: an event with an idempotency key answered 503 is sent
again, same key and payload, after `Retry-After`; an event without a key answered 503 is
not accepted and not resent. A 503 does not prove that nothing was queued (Redis may have
run the XADD whose reply timed out), so such events may turn up stored: that is neither a
loss nor a duplicate, and the summary counts them.

Redis runs with AOF `appendfsync everysec` and is restarted cleanly (SIGTERM: it writes
the AOF before exiting), so nothing acknowledged may be lost. A Redis *crash* can lose
about the last second of acknowledged writes: docs/reliability.md describes that window
and how to close it. The module owns its servers, so the session's are never disturbed.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
import redis

from bricqs.devstack import Server, restart
from bricqs.ids import new_event_id
from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.definitions import KINDS, parse_definition
from bricqs.pipeline import process_envelopes
from bricqs.schemas import ENVELOPE_FIELD, Envelope, decode_envelope
from bricqs.storage.definitions import create_definition
from bricqs.storage.tenants import Tenant as MechanicsTenant
from bricqs.stream import CONSUMER_GROUP, dead_letter_key, stream_key
from tests.conftest import Tenant, make_tenant, private_servers
from tests.faults.conftest import SUMMARIES
from tests.ingest.helpers import BATCH, EVENTS, SYNC, granian_ingest
from tests.processes import ProcessorFactory, wait_until
from tests.readback import Stored, snapshot, stored

pytestmark = pytest.mark.slow

# How long the load runs while faults are injected, and how hard it pushes: CLIENTS
# threads, each sending a request, then pausing PAUSE seconds.
LOAD_SECONDS = 90.0
CLIENTS = 4
PAUSE = 0.06
BATCH_SIZE = 5
PROCESSORS = 3
PARTICIPANTS = 25
# Seconds between two faults; the schedule below repeats until the load ends.
FAULT_GAP = 2.5
REDIS_PAUSE_SECONDS = 1.5
REDIS_TIMEOUT_MS = 300
DATABASE_TIMEOUT_MS = 1000
# A hang would hit this; a 503 comes within REDIS_TIMEOUT_MS (or DATABASE_TIMEOUT_MS for
# the sync endpoint and uncached keys), well inside it.
CLIENT_TIMEOUT = 8.0
# A keyed event is resent for at most this long before the client gives up on it.
GIVE_UP_SECONDS = 30.0
PROCESSOR_ENV = {
    # Crash-looped processors are killed far more often than in production; entries they
    # held climb towards the dead-letter limit for no fault of their own. The suite asserts
    # that nothing was dead-lettered, so keep the limit out of the way of the kills.
    "MAX_DELIVERIES": "50",
    "BATCH_SIZE": "100",
    "REDIS_TIMEOUT_MS": "1000",
}

# Mechanics of the tenant: points (fixed, from a property, and chained on a badge), a
# badge, a challenge with a reward, a daily streak. No caps: with a cap, which fact earns
# the last points depends on order, and the ledger could not be compared entry for entry.
DEFINITIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "points-rules",
        {
            "code": "login-points",
            "name": "Login",
            "trigger": {"fact_type": "custom.login"},
            "amount": {"fixed": 2},
        },
    ),
    (
        "points-rules",
        {
            "code": "spend",
            "name": "Spend",
            "trigger": {"fact_type": "custom.purchase"},
            "amount": {"property": "amount"},
        },
    ),
    (
        "points-rules",
        {
            "code": "badge-bonus",
            "name": "Badge bonus",
            "trigger": {"fact_type": "badge.awarded"},
            "amount": {"fixed": 7},
        },
    ),
    (
        "badges",
        {
            "code": "regular",
            "name": "Regular",
            "criteria": [{"criterion": {"fact_type": "custom.purchase"}, "threshold": 5}],
        },
    ),
    (
        "challenges",
        {
            "code": "variety",
            "name": "Variety",
            "objectives": [
                {
                    "code": "skus",
                    "criterion": {
                        "fact_type": "custom.purchase",
                        "aggregate": "distinct",
                        "property": "sku",
                    },
                    "target": 4,
                }
            ],
            "reward": {"points": 11},
        },
    ),
    (
        "streaks",
        {"code": "daily", "name": "Daily", "trigger": {"fact_type": "custom.login"}},
    ),
]


# ---------------------------------------------------------------------------------------
# What the clients sent and were told


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


# ---------------------------------------------------------------------------------------
# Faults


class Faults(threading.Thread):
    """Injects faults one after another, FAULT_GAP apart, until stopped: every other one
    SIGKILLs a processor (and starts a replacement), the rest rotate through a clean Redis
    restart, a PostgreSQL restart and a frozen Redis."""

    ROTATION = ("redis restart", "postgres restart", "redis pause")

    def __init__(
        self, servers: dict[str, Server], processors: ProcessorFactory, traffic: Traffic
    ) -> None:
        super().__init__(daemon=True, name="faults")
        self.servers = servers
        self.processors = processors
        self.traffic = traffic
        self.counts: Counter[str] = Counter()
        self.timeline: list[tuple[float, float, str]] = []
        """(start, end, kind) of every fault, in seconds into the run."""
        self.halt = threading.Event()
        self.failure: BaseException | None = None
        self.rng = random.Random(99)

    def run(self) -> None:
        try:
            turn = 0
            while not self.halt.wait(FAULT_GAP):
                if turn % 2 == 0:
                    self.kill_processor()
                else:
                    self.inject(self.ROTATION[(turn // 2) % len(self.ROTATION)])
                turn += 1
        except BaseException as exc:
            self.failure = exc
            raise

    def kill_processor(self) -> None:
        alive = [p for p in self.processors.started if p.alive()]
        if alive:
            at = self.traffic.now()
            self.rng.choice(alive).kill()
            self.counts["processor SIGKILL"] += 1
            self.timeline.append((at, self.traffic.now(), "processor SIGKILL"))
        for _ in range(PROCESSORS - len(alive) + 1):
            self.processors.start(wait=False, **PROCESSOR_ENV)

    def inject(self, kind: str) -> None:
        at = self.traffic.now()
        if kind == "redis restart":
            self.servers["redis"] = restart(self.servers["redis"])
        elif kind == "postgres restart":
            self.servers["postgres"] = restart(self.servers["postgres"])
        else:
            self.servers["redis"].pause()
            try:
                time.sleep(REDIS_PAUSE_SECONDS)
            finally:
                self.servers["redis"].resume()
        self.counts[kind] += 1
        self.timeline.append((at, self.traffic.now(), kind))


# ---------------------------------------------------------------------------------------
# The run


@dataclass
class Run:
    """What happened, and what PostgreSQL holds afterwards."""

    traffic: Traffic
    faults: Counter[str]
    tenant: Tenant
    replay: MechanicsTenant
    database_url: str
    rows: dict[str, list[tuple[str, int]]]
    """seq -> [(event_id, facts derived from it)] for every stored event of the tenant."""
    stored: Stored
    dead_letters: int
    seconds: float
    timeline: list[tuple[float, float, str]]
    summary: str = ""
    stream_state: dict[str, str] = field(default_factory=dict)
    """For each lost event's message id: what the stream says of it."""
    foreign_consumers: list[str] = field(default_factory=list)
    """Consumers in the group that the suite did not start (another process that found
    these servers' ports, say): what they took is not ours to account for."""

    def accepted(self) -> list[Sent]:
        return [s for s in self.traffic.sent if s.outcome == "accepted"]

    def lost(self) -> list[Sent]:
        return [s for s in self.accepted() if not self.rows.get(s.seq)]

    def duplicated(self) -> list[Sent]:
        return [s for s in self.traffic.sent if len(self.rows.get(s.seq, [])) > 1]

    def stored_after_503(self) -> list[Sent]:
        return [s for s in self.traffic.sent if s.outcome != "accepted" and self.rows.get(s.seq)]

    def explain(self, events: list[Sent], limit: int = 20) -> str:
        """Each event with the faults around its answer, for a failure message."""
        lines = []
        for sent in events[:limit]:
            near = [
                f"{kind} {start:.1f}-{end:.1f}s"
                for start, end, kind in self.timeline
                if start - 5 <= sent.answered_at <= end + 5
            ]
            lines.append(
                f"{sent.seq} {sent.endpoint} keyed={sent.keyed} attempts={sent.attempts}"
                f" answered at {sent.answered_at:.2f}s message_id={sent.message_id}"
                f" stream: {self.stream_state.get(sent.message_id or '', '-')}"
                f" faults near: {near}"
            )
        return "\n".join(lines)


def define_mechanics(database_url: str, tenant: MechanicsTenant) -> None:
    async def define() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            for segment, raw in DEFINITIONS:
                kind, schema = KINDS[segment]
                definition = parse_definition(schema, raw)
                assert not isinstance(definition, list), definition
                body = msgspec.json.encode(definition).decode()
                await create_definition(conn, tenant, kind, raw["code"], "active", body)

    asyncio.run(define())


def drained(client: redis.Redis) -> bool:
    """Nothing left unread or unacknowledged on the stream."""
    try:
        groups = client.xinfo_groups(stream_key(0))
    except (redis.ConnectionError, redis.TimeoutError):
        return False
    group = next((g for g in groups if g["name"] == CONSUMER_GROUP.encode()), None)
    return group is not None and group["pending"] == 0 and group["lag"] == 0


def stream_state(client: redis.Redis, message_ids: list[str]) -> dict[str, str]:
    """Where each message id is: on the stream (pending or not), or gone (trimmed after
    its acknowledgement, or never persisted)."""
    stream = stream_key(0)
    first = client.xrange(stream, count=1)
    oldest = first[0][0].decode() if first else "none"
    found = {}
    for message_id in message_ids:
        entry = client.xrange(stream, message_id, message_id)
        pending = client.xpending_range(stream, CONSUMER_GROUP, message_id, message_id, 1)
        where = "on the stream" if entry else f"gone (oldest entry {oldest})"
        if entry:
            envelope = decode_envelope(entry[0][1][ENVELOPE_FIELD])
            where += f" as {envelope.event_id}"
        found[message_id] = where + (", pending" if pending else "")
    return found


def read_rows(database_url: str, project_id: str) -> dict[str, list[tuple[str, int]]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT e.properties->>'seq', e.event_id,"
            " (SELECT count(*) FROM facts f WHERE f.project_id = e.project_id"
            "   AND f.environment = e.environment AND f.event_id = e.event_id"
            "   AND f.fact_type = 'custom.' || e.event_name)"
            " FROM events e WHERE e.project_id = %s",
            (project_id,),
        ).fetchall()
    rows: dict[str, list[tuple[str, int]]] = {}
    for seq, event_id, facts in found:
        rows.setdefault(seq, []).append((event_id, int(facts)))
    return rows


def replay(database_url: str, tenant: MechanicsTenant, events: list[Sent]) -> None:
    """Process `events` on `tenant` one at a time, in occurrence order, as a clean run."""

    def occurred(sent: Sent) -> datetime:
        return datetime.fromisoformat(sent.body["timestamp"])

    async def go() -> None:
        rules = RuleCache(refresh_seconds=0)
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            for sent in sorted(events, key=lambda s: (occurred(s), s.seq)):
                at = occurred(sent)
                envelope = Envelope(
                    event_id=new_event_id(),
                    project_id=tenant.project_id,
                    environment=tenant.environment,
                    event_name=sent.body["event_name"],
                    participant_id=sent.body["participant_id"],
                    properties=sent.body["properties"],
                    occurred_at=at,
                    received_at=at,
                )
                async with conn.transaction():
                    await process_envelopes(
                        conn, [envelope], idempotency_ttl=timedelta(days=30), rules_for=rules
                    )

    asyncio.run(go())


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    with private_servers(Path(tmp_path_factory.mktemp("faults"))) as owned:
        yield owned


@pytest.fixture(scope="module")
def run(
    servers: dict[str, Server],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Run]:
    started = time.monotonic()
    redis_url, database_url = servers["redis"].url, servers["postgres"].url  # ports are kept
    tenant = make_tenant(database_url, "faults")
    define_mechanics(database_url, MechanicsTenant(tenant.project_id, "live"))
    logs = Path(tmp_path_factory.mktemp("fault-logs"))
    processors = ProcessorFactory(redis_url, database_url, logs)
    traffic = Traffic()
    try:
        for _ in range(PROCESSORS):
            processors.start(**PROCESSOR_ENV)
        with granian_ingest(
            redis_url,
            database_url,
            REDIS_TIMEOUT_MS=str(REDIS_TIMEOUT_MS),
            DATABASE_TIMEOUT_MS=str(DATABASE_TIMEOUT_MS),
            # Granian's stderr is a pipe nobody reads during the run: one warning per
            # 503 would fill it and block the server. Errors (a 500's traceback) still go.
            LOG_LEVEL="ERROR",
        ) as base:
            clients = [Client(n, base, tenant.live_key, traffic) for n in range(CLIENTS)]
            faults = Faults(servers, processors, traffic)
            for thread in [*clients, faults]:
                thread.start()
            time.sleep(LOAD_SECONDS)
            faults.halt.set()
            faults.join(60)
            for client in clients:
                client.halt.set()
            for client in clients:  # a keyed event in hand is resent until it gets in
                client.join(GIVE_UP_SECONDS + 2 * CLIENT_TIMEOUT)
            assert not faults.is_alive() and faults.failure is None, faults.failure
            for client in clients:
                assert not client.is_alive() and client.failure is None, client.failure

        # Every processor up again, then everything drains.
        alive = [p for p in processors.started if p.alive()]
        for processor in alive:
            processor.wait_ready()
        client = redis.Redis.from_url(redis_url)
        try:
            wait_until(lambda: drained(client), 90, "the stream to drain", processors.logs)
            dead_letters = int(client.xlen(dead_letter_key(0)))
            rows = read_rows(database_url, tenant.project_id)
            state = stream_state(
                client,
                [s.message_id for s in traffic.sent if s.message_id and not rows.get(s.seq)],
            )
            ours = {p.name for p in processors.started}
            consumers = client.xinfo_consumers(stream_key(0), CONSUMER_GROUP)
            foreign = sorted({c["name"].decode() for c in consumers} - ours)
        finally:
            client.close()
        processors.stop_all()

        replayed = make_tenant(database_url, "faults replay")
        replay_tenant = MechanicsTenant(replayed.project_id, "live")
        define_mechanics(database_url, replay_tenant)
        result = Run(
            traffic=traffic,
            faults=faults.counts,
            tenant=tenant,
            replay=replay_tenant,
            database_url=database_url,
            rows=rows,
            stored=stored(database_url, tenant.project_id),
            dead_letters=dead_letters,
            seconds=0.0,
            timeline=faults.timeline,
            stream_state=state,
            foreign_consumers=foreign,
        )
        replay(
            database_url,
            replay_tenant,
            [*result.accepted(), *result.stored_after_503()],
        )
        result.seconds = time.monotonic() - started
        result.summary = summarise(result)
        (logs / "summary.txt").write_text(result.summary + "\n")
        request.config.stash.setdefault(SUMMARIES, []).append(result.summary)
        yield result
    finally:
        processors.stop_all()


def summarise(run: Run) -> str:
    sent = run.traffic.sent
    by_endpoint = Counter(s.endpoint for s in sent)
    outcomes = Counter(s.outcome for s in sent)
    resent = [s for s in run.accepted() if s.attempts > 1]
    answers = run.traffic.statuses
    lines = [
        ("events sent", f"{len(sent)}  " + ", ".join(f"{k} {v}" for k, v in by_endpoint.items())),
        ("  with an idempotency key", str(sum(s.keyed for s in sent))),
        ("accepted (2xx)", str(outcomes["accepted"])),
        ("  accepted after resending (keyed)", str(len(resent))),
        ("answered 503, not resent (no key)", str(outcomes["unavailable"])),
        ("  of which stored all the same", str(len(run.stored_after_503()))),
        ("keyed, given up after 503s", str(outcomes["gave_up"])),
        ("faults injected", ", ".join(f"{k} {v}" for k, v in sorted(run.faults.items()))),
        ("answers", ", ".join(f"{k}: {v}" for k, v in sorted(answers.items()))),
        ("answers 500", str(sum(v for k, v in answers.items() if k.startswith("500")))),
        (
            "no answer within the client timeout",
            str(answers["no answer within the client timeout"]),
        ),
        (
            "slowest answer",
            f"{run.traffic.slowest * 1000:.0f} ms (client timeout {CLIENT_TIMEOUT:.0f} s)",
        ),
        ("lost (2xx, not stored)", str(len(run.lost()))),
        ("duplicated (stored twice)", str(len(run.duplicated()))),
        ("dead-lettered", str(run.dead_letters)),
        ("consumers not started by the suite", str(len(run.foreign_consumers))),
        ("run time (load, drain, replay)", f"{run.seconds:.0f} s, load {LOAD_SECONDS:.0f} s"),
    ]
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)


# ---------------------------------------------------------------------------------------
# The checks


def test_every_fault_kind_was_injected_under_load(run: Run) -> None:
    assert set(run.faults) == {"processor SIGKILL", *Faults.ROTATION}, run.summary
    assert run.faults["processor SIGKILL"] >= 5, run.summary
    assert len(run.accepted()) > 1000, run.summary
    # The faults were felt: some answers were 503.
    assert any(k.startswith("503") for k in run.traffic.statuses), run.summary


def test_ingest_never_answered_500_nor_hung(run: Run) -> None:
    unexplained = {
        label: count
        for label, count in run.traffic.statuses.items()
        if not (label.startswith("20") or label.startswith("503"))
    }
    assert unexplained == {}, run.summary
    assert run.traffic.errors == [], run.traffic.errors[:10]
    assert run.traffic.slowest < CLIENT_TIMEOUT


def test_every_accepted_event_is_stored_once_with_its_fact(run: Run) -> None:
    lost = run.lost()
    assert lost == [], (
        f"{len(lost)} accepted events not stored:\n{run.explain(lost)}\n"
        f"consumers the suite did not start: {run.foreign_consumers}"
    )
    assert run.foreign_consumers == []
    assert run.duplicated() == [], run.summary
    for sent in run.accepted():
        ((event_id, facts),) = run.rows[sent.seq]
        assert event_id == sent.event_id, sent  # the id the client was given
        assert facts == 1, sent
    # Nothing stored that no client sent; nothing dead-lettered.
    known = {s.seq for s in run.traffic.sent}
    assert set(run.rows) <= known
    assert run.dead_letters == 0
    # Participants and the catalog counted each stored event once.
    n = len(run.rows)
    assert run.stored == Stored(n, n, n, n, n), run.stored


def test_keyed_events_were_all_accepted_in_the_end(run: Run) -> None:
    # A client that resends with its key gets every event in (none given up on).
    keyed = [s for s in run.traffic.sent if s.keyed]
    assert {s.outcome for s in keyed} == {"accepted"}, Counter(s.outcome for s in keyed)


def test_mechanics_equal_a_clean_sequential_replay(run: Run) -> None:
    faulted = snapshot(run.database_url, MechanicsTenant(run.tenant.project_id, "live"))
    clean = snapshot(run.database_url, run.replay)
    assert faulted["badges"] and faulted["challenges"] and faulted["streaks"]  # rules fired
    for part in ("balances", "ledger", "badges", "challenges", "streaks", "progress", "facts"):
        assert faulted[part] == clean[part], part
