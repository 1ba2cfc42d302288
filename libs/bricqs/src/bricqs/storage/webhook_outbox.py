"""The webhook outbox: messages owed to endpoints, written with the outcomes that owe them
(`enqueue_outcomes`), claimed by dispatchers with a lease (`claim_due`), and finished by
the attempts they record (`record_attempts`); endpoints and the delivery log are in
`webhooks.py`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from bricqs.facts import is_historical
from bricqs.ids import new_fact_id
from bricqs.schemas import Fact
from bricqs.storage.arrays import texts, unnest_texts
from bricqs.storage.events import insert_facts
from bricqs.storage.tenants import Conn, Tenant
from bricqs.storage.webhooks import EVENT_TYPES

_OWE_MESSAGES = f"""
    INSERT INTO webhook_messages
        (endpoint_id, fact_id, project_id, environment, participant_id, fact_type)
    SELECT e.endpoint_id, f.id, e.project_id, e.environment, f.pid, f.t
    FROM webhook_endpoints e JOIN unnest({unnest_texts(3)}) AS f(id, pid, t)
      ON f.t = ANY(e.event_types) OR '*' = ANY(e.event_types)
    WHERE e.project_id = %b AND e.environment = %b AND e.enabled
    ON CONFLICT DO NOTHING
"""  # noqa: S608 - fixed SQL fragments, never input


async def enqueue_outcomes(conn: Conn, tenant: Tenant, facts: Sequence[Fact]) -> None:
    """Owe one message per (outcome, enabled endpoint subscribed to its type), in the
    caller's transaction: the outcome and its messages commit or roll back together.

    One statement whatever the number of facts, whose result is not read, so in pipeline
    mode it costs no round trip; with no endpoint the join finds nothing.
    """
    # Outcomes of a historical import are recorded, not announced (docs/import.md).
    outcomes = [f for f in facts if f.fact_type in EVENT_TYPES and not is_historical(f)]
    if not outcomes:
        return
    await conn.execute(
        _OWE_MESSAGES,
        (
            *texts([f.fact_id for f in outcomes]),
            *texts([f.participant_id for f in outcomes]),
            *texts([f.fact_type for f in outcomes]),
            tenant.project_id,
            tenant.environment,
        ),
    )


class DueMessage(NamedTuple):
    """A claimed message with what its attempt needs: the endpoint and the outcome."""

    endpoint_id: str
    fact_id: str
    attempts: int
    """Attempts made before this one."""
    url: str
    secrets: list[str]
    """The endpoint's current secret, then the previous one while it still signs."""
    fact_type: str
    project_id: str
    environment: str
    participant_id: str
    event_id: str
    properties: dict[str, Any]
    occurred_at: datetime
    created_at: datetime


class Claim:
    """A claim whose messages are read once its transaction has committed: in pipeline
    mode the claim, the COMMIT and the results then travel in one round trip."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    async def messages(self) -> list[DueMessage]:
        """The messages claimed."""
        return [DueMessage(*row) for row in await self._cursor.fetchall()]


async def claim_due(
    conn: Conn,
    *,
    now: datetime,
    lease_until: datetime,
    token: str,
    limit: int,
    per_endpoint: int,
) -> Claim:
    """Claim up to `limit` messages due at `now` until `lease_until`, at most
    `per_endpoint` leased at once to any endpoint, counting every replica's leases.

    Must run in a transaction, in two statements: the first locks the endpoints with due
    messages (SKIP LOCKED: another replica claiming for one skips it); the second starts
    after those locks are held, so its snapshot sees every lease committed by the
    replica that held an endpoint before, and its count of leases is the cluster's.
    The first hands the endpoints it locked to the second in a setting local to the
    transaction, so the second need not wait for its result: both can be pipelined.
    Messages are leased by moving their next attempt to the lease's end; a dispatcher
    that dies mid-attempt leaves them due again when it ends, and that lost attempt is
    counted (a message that keeps killing dispatchers still runs out of attempts).
    """
    # A LATERAL probe with LIMIT 1, not EXISTS: the planner may turn EXISTS into a hash
    # join over every due message (28 ms a round with 17,000 due, seen in the benchmark).
    await conn.execute(
        "SELECT set_config('bricqs.claimed_endpoints', coalesce(array_agg(locked.id), '{}')"
        "::text, true) FROM ("
        " SELECT e.endpoint_id AS id FROM webhook_endpoints e CROSS JOIN LATERAL ("
        "  SELECT 1 FROM webhook_messages m WHERE m.endpoint_id = e.endpoint_id"
        "  AND m.status = 'pending' AND m.next_attempt_at <= %s LIMIT 1) AS due"
        " WHERE e.enabled LIMIT %s FOR NO KEY UPDATE OF e SKIP LOCKED) AS locked",
        (now, limit),
    )
    cursor = await conn.execute(
        """
        WITH picked AS (
            SELECT m.endpoint_id, m.fact_id, m.lease_token
            FROM unnest(current_setting('bricqs.claimed_endpoints')::text[]) AS ends(id)
            CROSS JOIN LATERAL (
                SELECT endpoint_id, fact_id, lease_token FROM webhook_messages m
                WHERE m.endpoint_id = ends.id AND m.status = 'pending'
                  AND m.next_attempt_at <= %(now)s
                ORDER BY m.next_attempt_at
                LIMIT greatest(%(per_endpoint)s - (
                    SELECT count(*) FROM webhook_messages l
                    WHERE l.endpoint_id = ends.id AND l.lease_token IS NOT NULL
                      AND l.next_attempt_at > %(now)s AND l.status = 'pending'), 0)
                FOR UPDATE OF m SKIP LOCKED
            ) m
            LIMIT %(limit)s
        )
        UPDATE webhook_messages w
        SET next_attempt_at = %(lease_until)s, lease_token = %(token)s,
            attempts = w.attempts + (picked.lease_token IS NOT NULL)::int,
            last_error = CASE WHEN picked.lease_token IS NOT NULL
                THEN 'the attempt ended with its dispatcher (lease expired)'
                ELSE w.last_error END
        FROM picked, webhook_endpoints e, facts f
        WHERE w.endpoint_id = picked.endpoint_id AND w.fact_id = picked.fact_id
          AND e.endpoint_id = w.endpoint_id
          AND f.project_id = w.project_id AND f.environment = w.environment
          AND f.participant_id = w.participant_id AND f.fact_id = w.fact_id
        RETURNING w.endpoint_id, w.fact_id, w.attempts, e.url,
            CASE WHEN e.previous_secret_expires_at > %(now)s
                 THEN ARRAY[e.secret, e.previous_secret] ELSE ARRAY[e.secret] END,
            w.fact_type, w.project_id, w.environment, f.participant_id, f.event_id,
            f.properties, f.occurred_at, f.created_at
        """,
        {
            "now": now,
            "per_endpoint": per_endpoint,
            "limit": limit,
            "lease_until": lease_until,
            "token": token,
        },
    )
    return Claim(cursor)


@dataclass(frozen=True)
class Attempt:
    """The result of one delivery attempt of a claimed message."""

    endpoint_id: str
    fact_id: str
    token: str
    status: str
    """`delivered`, `pending` (retried at `next_attempt_at`) or `failed`."""
    next_attempt_at: datetime
    http_status: int | None
    latency_ms: int
    error: str | None
    at: datetime


async def record_attempts(conn: Conn, attempts: Sequence[Attempt]) -> None:
    """Store attempts, each only while its claim is still the message's (a claim whose
    lease ran out and was taken by another dispatcher no longer writes)."""
    if not attempts:
        return
    await conn.execute(
        """
        UPDATE webhook_messages w
        SET status = r.status, attempts = w.attempts + 1, next_attempt_at = r.next_at,
            last_status = r.http_status, last_latency_ms = r.latency, last_error = r.error,
            lease_token = NULL,
            finished_at = CASE WHEN r.status <> 'pending' THEN r.at END
        FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[],
                    %s::int[], %s::int[], %s::text[], %s::timestamptz[])
             AS r(endpoint_id, fact_id, token, status, next_at, http_status, latency, error, at)
        WHERE w.endpoint_id = r.endpoint_id AND w.fact_id = r.fact_id
          AND w.lease_token = r.token
        """,
        (
            [a.endpoint_id for a in attempts],
            [a.fact_id for a in attempts],
            [a.token for a in attempts],
            [a.status for a in attempts],
            [a.next_attempt_at for a in attempts],
            [a.http_status for a in attempts],
            [a.latency_ms for a in attempts],
            [a.error for a in attempts],
            [a.at for a in attempts],
        ),
    )


async def disable_endpoint(conn: Conn, endpoint_id: str, reason: str) -> None:
    """Stop delivering to an endpoint (its receiver answered 410 Gone)."""
    await conn.execute(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = %s, updated_at = now()"
        " WHERE endpoint_id = %s",
        (reason, endpoint_id),
    )


async def purge_finished(conn: Conn, *, delivered_before: datetime, failed_before: datetime) -> int:
    """Delete delivered messages finished before `delivered_before` and failed ones before
    `failed_before` (kept longer: they may be replayed); how many were deleted."""
    cursor = await conn.execute(
        "DELETE FROM webhook_messages WHERE status <> 'pending'"
        " AND finished_at < CASE WHEN status = 'delivered' THEN %s::timestamptz"
        " ELSE %s::timestamptz END",
        (delivered_before, failed_before),
    )
    return cursor.rowcount


async def sweep_orphans(conn: Conn, *, now: datetime, disabled_before: datetime) -> tuple[int, int]:
    """Settle messages no claim will take; (deleted, failed).

    Deleted: pending messages whose endpoint is gone (a batch that read the endpoint
    before its deletion committed can still write them). Failed: messages waiting on a
    disabled endpoint since before `disabled_before` (the end of their retry schedule),
    so they can be replayed once it is enabled again instead of waiting forever.
    """
    deleted = await conn.execute(
        "DELETE FROM webhook_messages m WHERE m.status = 'pending' AND NOT EXISTS ("
        " SELECT 1 FROM webhook_endpoints e WHERE e.endpoint_id = m.endpoint_id)"
    )
    failed = await conn.execute(
        "UPDATE webhook_messages m SET status = 'failed', finished_at = %s, lease_token = NULL,"
        " last_error = 'the endpoint was disabled until the end of the retry schedule'"
        " FROM webhook_endpoints e WHERE e.endpoint_id = m.endpoint_id AND NOT e.enabled"
        " AND m.status = 'pending' AND m.created_at < %s",
        (now, disabled_before),
    )
    return deleted.rowcount, failed.rowcount


class Backlog(NamedTuple):
    """What the dispatcher's alerts watch."""

    due: int
    """Messages due now to enabled endpoints and not claimed."""
    oldest_due_seconds: float
    """How long the oldest of them has been due (0 with none)."""
    disabled_endpoints: int


async def backlog(conn: Conn, now: datetime) -> Backlog:
    """The outbox's backlog at `now`."""
    cursor = await conn.execute(
        "SELECT count(*), coalesce(extract(epoch FROM %s - min(m.next_attempt_at)), 0),"
        " (SELECT count(*) FROM webhook_endpoints WHERE NOT enabled)"
        " FROM webhook_messages m JOIN webhook_endpoints e USING (endpoint_id)"
        " WHERE e.enabled AND m.status = 'pending' AND m.next_attempt_at <= %s",
        (now, now),
    )
    row = await cursor.fetchone()
    assert row is not None
    return Backlog(int(row[0]), max(float(row[1]), 0.0), int(row[2]))


TEST_PARTICIPANT = "bricqs:webhook-test"
"""The participant the facts of test messages are stored under."""


async def enqueue_test_message(conn: Conn, tenant: Tenant, endpoint_id: str) -> str | None:
    """Owe the endpoint a `webhook.test` message (whatever it subscribed to); its id, or
    None when the tenant has no such endpoint. Its fact is stored like an outcome's, so
    the dispatcher sends it like any other message."""
    now = datetime.now(UTC)
    fact = Fact(
        fact_id=new_fact_id(),
        fact_type="webhook.test",
        project_id=tenant.project_id,
        environment=tenant.environment,
        participant_id=TEST_PARTICIPANT,
        event_id="evt_webhook_test",
        properties={"message": "A test message from Bricqs: your endpoint is reachable."},
        occurred_at=now,
    )
    cursor = await conn.execute(
        "INSERT INTO webhook_messages"
        " (endpoint_id, fact_id, project_id, environment, participant_id, fact_type)"
        " SELECT endpoint_id, %s, project_id, environment, %s, %s FROM webhook_endpoints"
        " WHERE project_id = %s AND environment = %s AND endpoint_id = %s",
        (
            fact.fact_id,
            fact.participant_id,
            fact.fact_type,
            tenant.project_id,
            tenant.environment,
            endpoint_id,
        ),
    )
    if cursor.rowcount == 0:
        return None
    await insert_facts(conn, [fact])
    return fact.fact_id
