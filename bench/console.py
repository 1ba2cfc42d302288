"""Console page times with a large project (issue 17).

    uv run --locked python -m bench.console [--participants N] [--requests N]

Fills one project with `--participants` participants (two events each, through one
`bricqs-processor` and the benchmark's 20 rules: points, badges, challenges, streaks, a
weekly leaderboard), serves the api with its console under Granian, signs in and times
each page `--requests` times, one request at a time, and the definitions editor's preview
(a form post) as many times. A time is the client's, on loopback:
the server's time plus the HTTP round trip, so an upper bound of the server's.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis

from bench.processor import _all_acknowledged, _check
from bench.rule_engine import TWENTY_RULES
from bench.stack import Stack
from bench.workload import BUY, LOGIN
from bricqs.ids import new_event_id
from bricqs.schemas import ENVELOPE_FIELD, Envelope, encode_envelope
from bricqs.stream import stream_key

SECRET = "bench-console-session-secret-0123456789"  # noqa: S105  # a throwaway stack


def envelopes(project_id: str, participants: int, seed: int = 17) -> list[bytes]:
    """A purchase in the last 30 days and a login in the last day for every participant."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for n in range(participants):
        for name, ago, props in (
            (BUY, rng.randrange(30 * 86_400), {"amount": rng.randrange(1, 200), "currency": "USD"}),
            (LOGIN, rng.randrange(86_400), {"device": rng.choice(["ios", "web"])}),
        ):
            out.append(
                encode_envelope(
                    Envelope(
                        event_id=new_event_id(),
                        project_id=project_id,
                        environment="live",
                        event_name=name.removeprefix("custom."),
                        participant_id=f"user_{n}",
                        properties=props,
                        occurred_at=now - timedelta(seconds=ago),
                        received_at=now,
                    )
                )
            )
    return out


def fill(stack: Stack, project_id: str, participants: int) -> float:
    """Process every participant's events with one processor; the seconds it took."""
    client = redis.Redis.from_url(stack.redis_url)
    payloads = envelopes(project_id, participants)
    for start in range(0, len(payloads), 5_000):
        pipe = client.pipeline(transaction=False)
        for payload in payloads[start : start + 5_000]:
            pipe.xadd(stream_key(0), {ENVELOPE_FIELD: payload})
        pipe.execute()
    started = time.monotonic()
    _, child = stack.processor()
    deadline = started + 3600
    try:
        while not _all_acknowledged(client):
            _check(child, deadline)
            time.sleep(0.5)
    finally:
        client.close()
        stack.stop(child)
    return time.monotonic() - started


def signed_in(base: str, key: str) -> httpx.Client:
    """A client holding a console session."""
    client = httpx.Client(base_url=base, timeout=30, headers={"X-API-Key": key})
    page = client.get("/console/sign-in").text
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page)
    assert token is not None
    answer = client.post("/console/sign-in", data={"api_key": key, "_csrf_token": token[1]})
    assert answer.status_code in (200, 303), answer.text
    return client


PAGES = {
    # Not a console page: the api's own JSON read of one participant's points, timed in
    # the same run as a yardstick of the machine's load (the machine may be shared).
    "api points (yardstick)": "/api/v1/gamify/participants/user_4242/points",
    "overview": "/console/",
    "events": "/console/events",
    "event": "/console/events/purchase_completed",
    "definitions": "/console/definitions",
    "definition editor": "/console/definitions/points-rules/spend",
    "participant": "/console/participants/user_4242",
    # The api's reads of the same participant (the page adds its ledger and facts).
    "api participant state (yardstick)": "/api/v1/gamify/participants/user_4242/state",
    "leaderboard": "/console/leaderboards?board=spenders",
    "leaderboard find rank": "/console/leaderboards?board=spenders&find=user_4242",
    # The api's own ranking read, which the leaderboard page calls: what the page costs
    # beyond it is the console's.
    "api leaderboard (yardstick)": "/api/v1/gamify/leaderboards/spenders?limit=50",
    "dead letters": "/console/dead-letters",
    "webhooks": "/console/webhooks",
}


def time_pages(client: httpx.Client, requests: int) -> dict[str, dict[str, float]]:
    """Median and worst milliseconds per page (after one warm-up request each)."""
    results = {}
    for name, path in PAGES.items():
        assert client.get(path).status_code == 200, path
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            answer = client.get(path)
            samples.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, (path, answer.status_code)
        results[name] = {
            "median_ms": round(statistics.median(samples), 1),
            "max_ms": round(max(samples), 1),
        }
    return results


PREVIEW = {
    "definition": json.dumps(
        {
            "code": "preview",
            "name": "Preview",
            "trigger": {"fact_type": BUY},
            "amount": {"property": "amount", "multiplier": 2},
        }
    ),
    "participant": "user_4242",
    "facts": "500",
}


def time_preview(client: httpx.Client, requests: int) -> dict[str, float]:
    """The definitions editor's preview (a form post) of a draft points rule over one
    participant's last 500 facts."""
    page = client.get("/console/definitions/points-rules/new").text
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page)
    assert token is not None
    form = PREVIEW | {"_csrf_token": token[1]}
    samples = []
    for _ in range(requests + 1):  # the first is a warm-up
        started = time.perf_counter()
        answer = client.post("/console/definitions/preview/points-rules", data=form)
        samples.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200 and 'id="preview"' in answer.text, answer.text[:500]
    return {
        "median_ms": round(statistics.median(samples[1:]), 1),
        "max_ms": round(max(samples[1:]), 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args(argv)
    stack = Stack.start()
    try:
        project = stack.project("console-bench", TWENTY_RULES)
        seconds = fill(stack, project.project_id, args.participants)
        port, _ = stack.granian(
            "bricqs_api.app:create_app",
            CONSOLE_SESSION_SECRET=SECRET,
            CONSOLE_COOKIE_SECURE="false",
        )
        client = signed_in(f"http://127.0.0.1:{port}", project.key)
        try:
            pages = time_pages(client, args.requests)
            pages["definition preview (post)"] = time_preview(client, args.requests)
        finally:
            client.close()
    finally:
        stack.close()
    report: dict[str, Any] = {
        "participants": args.participants,
        "events": 2 * args.participants,
        "fill_seconds": round(seconds, 1),
        "requests_per_page": args.requests,
        "pages": pages,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
