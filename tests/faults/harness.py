"""The fault suite's plan and bookkeeping: how long each phase may take, what PostgreSQL and
the stream hold afterwards, the clean replay the run is compared with, and the summary.

Every phase has its own deadline, well inside the module's pytest timeout: a phase that
misses it fails with what is known so far (sent, accepted, stored, missing, the faults
injected), never with a bare pytest-timeout that hides whether anything was lost.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import redis

from bricqs.ids import new_event_id
from bricqs.mechanics.cache import RuleCache
from bricqs.pipeline import process_envelopes
from bricqs.schemas import ENVELOPE_FIELD, Envelope, decode_envelope
from bricqs.storage.tenants import Tenant as MechanicsTenant
from bricqs.stream import CONSUMER_GROUP, stream_key
from tests.conftest import Tenant
from tests.faults.traffic import CLIENT_TIMEOUT, STOP_BOUND, Sent, Traffic

T = TypeVar("T")

# The replay stores this many events per transaction, in occurrence order: the same
# bulk path the processor takes, so replaying thousands of events takes seconds.
REPLAY_CHUNK = 500
# How long a read for a failure report may take: the database may be what failed.
REPORT_TIMEOUT_S = 5


@dataclass(frozen=True)
class Plan:
    """How long the load runs, and the deadline of each phase, in seconds."""

    load_seconds: float
    min_each: int
    """The load goes on past `load_seconds` until every fault kind was injected this
    many times, for at most `load_overrun` more seconds."""
    load_overrun: float = 30.0
    setup: float = 60.0
    # Clients finish the request in hand; a fault in progress (a restart) finishes too.
    wind_down: float = STOP_BOUND + 30.0
    # Processors started during the load get ready, reclaim what the killed ones held
    # (CLAIM_MIN_IDLE_MS) and drain the stream.
    drain: float = 90.0
    ready: float = 30.0
    """For the processors still starting when the load ends to get ready."""

    def drain_deadline(self) -> float:
        return self.ready + self.drain

    def replay_deadline(self, events: int) -> float:
        """Generous for the bulk replay: it stores a few thousand events a second."""
        return 60.0 + events / 200

    def timeout(self) -> float:
        """A bound on the whole module, for pytest-timeout: every deadline plus slack, so a
        phase deadline always fires first."""
        most_events = self.load_bound() * 400  # far above what four clients send
        return (
            self.setup
            + self.load_bound()
            + self.wind_down
            + self.drain_deadline()
            + self.replay_deadline(int(most_events))
            + 60
        )

    def load_bound(self) -> float:
        return self.load_seconds + self.load_overrun


# CI's run: every fault kind at least twice in about 40 s of load (a fault every 2.5 s,
# every other one a processor kill). `make soak` sets BRICQS_FAULT_LOAD_SECONDS for the
# long form (the 90 s and more), which CI never runs.
CI_PLAN = Plan(load_seconds=42.0, min_each=2)


def chosen_plan() -> Plan:
    seconds = os.environ.get("BRICQS_FAULT_LOAD_SECONDS")
    if not seconds:
        return CI_PLAN
    load = float(seconds)
    # A round of every fault kind takes about 21 s here (CI's 42 s reach two of each)
    # and more on a busy machine, so a fixed 30 s past the load was not enough for 15 of
    # each after 300 s (one run stopped at 14 postgres crashes): the overrun grows with
    # the load, and the count asked for stays.
    return Plan(
        load_seconds=load, min_each=max(2, int(load // 20)), load_overrun=max(30.0, load / 4)
    )


class Phases:
    """Runs the phases of the run, each in a thread joined with its deadline; keeps their
    times. `report` says what is known so far, for a phase that fails or runs late."""

    def __init__(self, report: Callable[[], str]) -> None:
        self.report = report
        self.times: dict[str, float] = {}

    def run(self, name: str, deadline: float, action: Callable[[], T]) -> T:
        outcome: list[T] = []
        errors: list[BaseException] = []

        def target() -> None:
            try:
                outcome.append(action())
            except BaseException as exc:
                errors.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=target, daemon=True, name=f"phase {name}")
        thread.start()
        thread.join(deadline)
        self.times[name] = time.monotonic() - started
        if thread.is_alive():
            pytest.fail(
                f"the {name} phase passed its deadline of {deadline:.0f} s\n{self.report()}",
                pytrace=False,
            )
        if errors:
            error = errors[0]
            message = error.msg if isinstance(error, pytest.fail.Exception) else repr(error)
            pytest.fail(f"the {name} phase failed: {message}\n{self.report()}", pytrace=False)
        return outcome[0]

    def line(self) -> str:
        parts = ", ".join(f"{name} {seconds:.0f}" for name, seconds in self.times.items())
        return f"{parts}; total {sum(self.times.values()):.0f}"


# ---------------------------------------------------------------------------------------
# What the stream and PostgreSQL hold


class Drain:
    """Whether nothing is left unread or unacknowledged on the stream: the group has
    delivered up to the stream's last entry and holds nothing pending.

    Not the group's `lag`: Redis 7.0 can report a lag of 0 while entries are still to be
    delivered (redis/redis#13337, #13957: after trims). `lag_misreports` counts the polls
    that saw it, for the summary."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.lag_misreports = 0

    def __call__(self) -> bool:
        try:
            stream = self.client.xinfo_stream(stream_key(0))
            groups = self.client.xinfo_groups(stream_key(0))
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        group = next((g for g in groups if g["name"] == CONSUMER_GROUP.encode()), None)
        if group is None or group["pending"]:
            return False
        caught_up = group["last-delivered-id"] == stream["last-generated-id"]
        if group["lag"] == 0 and not caught_up:
            self.lag_misreports += 1
        return bool(caught_up)


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
        if pending:
            where += f", pending with {pending[0]['consumer'].decode()}"
        found[message_id] = where
    return found


def read_rows(
    database_url: str, project_id: str, timeout_s: float | None = None
) -> dict[str, list[tuple[str, int]]]:
    """seq -> [(event_id, facts derived from it)] for every stored event of the project.
    With `timeout_s`, the connection and the query give up after that long."""
    options: dict[str, Any] = {}
    if timeout_s is not None:
        options = {
            "connect_timeout": max(1, int(timeout_s)),
            "options": f"-c statement_timeout={int(timeout_s * 1000)}",
        }
    with psycopg.connect(database_url, autocommit=True, **options) as conn:
        # One join, not a count per event: facts have no index by event (they are keyed
        # by participant and fact id), so a lookup per event read the project's facts
        # once per event, and a long soak's 15,000 events took minutes.
        found = conn.execute(
            "SELECT e.properties->>'seq', e.event_id, coalesce(f.facts, 0)"
            " FROM events e LEFT JOIN ("
            "   SELECT environment, event_id, fact_type, count(*) AS facts FROM facts"
            "   WHERE project_id = %s AND fact_type LIKE 'custom.%%'"
            "   GROUP BY environment, event_id, fact_type"
            " ) f ON f.environment = e.environment AND f.event_id = e.event_id"
            "   AND f.fact_type = 'custom.' || e.event_name"
            " WHERE e.project_id = %s",
            (project_id, project_id),
        ).fetchall()
    rows: dict[str, list[tuple[str, int]]] = {}
    for seq, event_id, facts in found:
        rows.setdefault(seq, []).append((event_id, int(facts)))
    return rows


def stored_elsewhere(database_url: str, event_ids: list[str]) -> dict[str, str]:
    """For events missing from the tenant: the project and environment that hold them, if
    any (a routing bug would show here; a lost event is in none)."""
    if not event_ids:
        return {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT event_id, project_id || '/' || environment FROM events"
            " WHERE event_id = ANY(%s)",
            (event_ids,),
        ).fetchall()
    return dict(found)


def crashes(log: Path) -> list[str]:
    """What a PostgreSQL log says of each crash of one of its processes (each is followed
    by a recovery from the WAL): the ones the suite injected, and any other."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return [line for line in text.splitlines() if "terminated by signal" in line]


def replay(database_url: str, tenant: MechanicsTenant, events: list[Sent]) -> None:
    """Process `events` on `tenant` as a clean run: in occurrence order, REPLAY_CHUNK to a
    transaction, with no fault anywhere."""

    def occurred(sent: Sent) -> datetime:
        return datetime.fromisoformat(sent.body["timestamp"])

    async def go() -> None:
        rules = RuleCache(refresh_seconds=0)
        ordered = sorted(events, key=lambda s: (occurred(s), s.seq))
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            for start in range(0, len(ordered), REPLAY_CHUNK):
                envelopes = [
                    Envelope(
                        event_id=new_event_id(),
                        project_id=tenant.project_id,
                        environment=tenant.environment,
                        event_name=sent.body["event_name"],
                        participant_id=sent.body["participant_id"],
                        properties=sent.body["properties"],
                        occurred_at=occurred(sent),
                        received_at=occurred(sent),
                    )
                    for sent in ordered[start : start + REPLAY_CHUNK]
                ]
                async with conn.transaction():
                    await process_envelopes(
                        conn,
                        envelopes,
                        idempotency_ttl=timedelta(days=30),
                        rules_for=rules,
                        report=False,
                    )

    asyncio.run(go())


# ---------------------------------------------------------------------------------------
# The outcome


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
    dead_letters: int
    lag_misreports: int
    """Drain polls where Redis said lag 0 with entries still to deliver."""
    postgres_crashes: list[str]
    """PostgreSQL's log lines of crashes: those the suite injected, and any other."""
    timeline: list[tuple[float, float, str]]
    phases: Phases
    plan: Plan
    summary: str = ""
    stream_state: dict[str, str] = field(default_factory=dict)
    """For each lost event's message id: what the stream says of it."""
    elsewhere: dict[str, str] = field(default_factory=dict)
    """For each lost event's id: the tenant that holds it instead, if any."""
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
                f" PostgreSQL: {self.elsewhere.get(sent.event_id or '', 'in no tenant')}"
                f" faults near: {near}"
            )
        return "\n".join(lines)


def table(lines: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)


def traffic_lines(traffic: Traffic, faults: Counter[str]) -> list[tuple[str, str]]:
    """What the clients sent and were told, and the faults injected: known at any time."""
    with traffic.lock:
        sent = list(traffic.sent)
        answers = Counter(traffic.statuses)
    by_endpoint = Counter(s.endpoint for s in sent)
    outcomes = Counter(s.outcome for s in sent)
    return [
        ("events sent", f"{len(sent)}  " + ", ".join(f"{k} {v}" for k, v in by_endpoint.items())),
        ("  with an idempotency key", str(sum(s.keyed for s in sent))),
        ("accepted (2xx)", str(outcomes["accepted"])),
        ("answered 503, not resent (no key)", str(outcomes["unavailable"])),
        ("keyed, given up after 503s", str(outcomes["gave_up"])),
        ("still in a client's hands", str(outcomes["pending"])),
        ("faults injected", ", ".join(f"{k} {v}" for k, v in sorted(faults.items()))),
        ("answers", ", ".join(f"{k}: {v}" for k, v in sorted(answers.items()))),
        ("answers 500", str(sum(v for k, v in answers.items() if k.startswith("500")))),
        (
            "slowest answer",
            f"{traffic.slowest * 1000:.0f} ms (client timeout {CLIENT_TIMEOUT:.0f} s)",
        ),
    ]


def progress(traffic: Traffic, faults: Counter[str], database_url: str, project_id: str) -> str:
    """The report of a run cut short: what the clients know, and what PostgreSQL holds if
    it answers within REPORT_TIMEOUT_S."""
    lines = traffic_lines(traffic, faults)
    accepted = traffic.accepted()
    try:
        rows = read_rows(database_url, project_id, timeout_s=REPORT_TIMEOUT_S)
    except psycopg.Error as exc:
        lines.append(("stored, missing", f"unknown: PostgreSQL did not answer ({exc!r})"))
    else:
        missing = [s.seq for s in accepted if not rows.get(s.seq)]
        lines.append(("stored (events)", str(len(rows))))
        lines.append(
            ("accepted, not stored yet", f"{len(missing)}  e.g. {', '.join(missing[:10])}")
        )
    return table(lines)


def crash_line(run: Run) -> str:
    """How many crashes PostgreSQL logged, against how many the suite injected; the log's
    words when something else crashed it too."""
    injected = run.faults["postgres crash"]
    line = f"{len(run.postgres_crashes)} (injected {injected})"
    if len(run.postgres_crashes) > injected:
        line += ": " + "; ".join(run.postgres_crashes)
    return line


def summarise(run: Run) -> str:
    lines = traffic_lines(run.traffic, run.faults)
    resent = [s for s in run.accepted() if s.attempts > 1]
    lines[3:3] = [("  accepted after resending (keyed)", str(len(resent)))]
    lines[5:5] = [("  of which stored all the same", str(len(run.stored_after_503())))]
    lines += [
        ("lost (2xx, not stored)", str(len(run.lost()))),
        ("duplicated (stored twice)", str(len(run.duplicated()))),
        ("dead-lettered", str(run.dead_letters)),
        ("drain polls where Redis misreported lag 0", str(run.lag_misreports)),
        ("PostgreSQL crashes in its log", crash_line(run)),
        ("consumers not started by the suite", str(len(run.foreign_consumers))),
        ("phases (s)", run.phases.line()),
        ("load planned", f"{run.plan.load_seconds:.0f} s, every fault kind >= {run.plan.min_each}"),
    ]
    return table(lines)
