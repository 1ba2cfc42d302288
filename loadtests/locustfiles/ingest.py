"""Load test of the three ingest endpoints (async single, batch, sync) with a realistic mix.

Each simulated client sends mostly single events, some batches and some sync events;
a share of its events carry idempotency keys and some are retried (expected answer:
202 with `duplicate: true`); some are invalid on purpose (expected: 422). Those provoked
answers are checked and reported under their own names, and are not errors. The SLO
gate (common/slo.py) sets the exit code when Locust quits.

    cd loadtests && locust --host http://127.0.0.1:8000   # settings in locust.conf
    (the API key comes from BRICQS_API_KEY; `make loadtest` does all of it)
"""

from __future__ import annotations

import json
import os
import random
from collections import deque
from typing import Any

import common.slo  # noqa: F401  (registers the SLO gate)
import gevent
from common.events import batch, event, invalid_event
from locust import FastHttpUser, constant_throughput, task

SINGLE = "/api/v1/ingest/events"
BATCH = "/api/v1/ingest/events/batch"
SYNC = "/api/v1/ingest/events/sync"
REQUESTS_PER_SECOND = float(os.environ.get("LOADTEST_USER_RPS", "10"))


class IngestClient(FastHttpUser):
    """One API client sending events at up to LOADTEST_USER_RPS requests per second."""

    wait_time = constant_throughput(REQUESTS_PER_SECOND)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.headers = {
            "X-API-Key": os.environ["BRICQS_API_KEY"],
            "Content-Type": "application/json",
        }
        # Recently accepted events sent with an idempotency key, for retries.
        self.sent: deque[dict[str, Any]] = deque(maxlen=50)
        # Start at a random phase: users spawned at a steady rate would otherwise keep
        # firing in lockstep, in bursts no real population of clients produces.
        gevent.sleep(self.rng.uniform(0, 1 / REQUESTS_PER_SECOND))

    def _post(self, path: str, name: str, body: Any, expect: int) -> dict[str, Any] | None:
        with self.client.post(
            path, data=json.dumps(body), headers=self.headers, name=name, catch_response=True
        ) as response:
            if response.status_code != expect:
                response.failure(f"expected {expect}, got {response.status_code}: {response.text}")
                return None
            answer: dict[str, Any] = response.json()
            response.success()
            return answer

    @task(70)
    def single(self) -> None:
        body = event(self.rng)
        answer = self._post(SINGLE, SINGLE, body, 202)
        if answer is not None and "idempotency_key" in body:
            self.sent.append(body)

    @task(10)
    def batch(self) -> None:
        answer = self._post(BATCH, BATCH, {"events": batch(self.rng)}, 202)
        if answer is not None and answer["accepted"] + answer["duplicates"] == 0:
            self.environment.events.request.fire(
                request_type="CHECK",
                name="batch accepted nothing",
                response_time=0,
                response_length=0,
                exception=AssertionError("a batch with valid events accepted none"),
                context={},
            )

    @task(8)
    def sync(self) -> None:
        self._post(SYNC, SYNC, event(self.rng, idempotency_share=0.05), 200)

    @task(6)
    def retry(self) -> None:
        """A client retrying an event it already sent: the original ids come back."""
        if not self.sent:
            return
        body = self.rng.choice(self.sent)
        with self.client.post(
            SINGLE,
            data=json.dumps(body),
            headers=self.headers,
            name=f"{SINGLE} [duplicate]",
            catch_response=True,
        ) as response:
            if response.status_code == 202 and response.json().get("duplicate") is True:
                response.success()
            else:
                response.failure(f"retry not answered as a duplicate: {response.text}")

    @task(6)
    def invalid(self) -> None:
        """A broken event: 422 with the field errors is the right answer."""
        with self.client.post(
            SINGLE,
            data=json.dumps(invalid_event(self.rng)),
            headers=self.headers,
            name=f"{SINGLE} [invalid]",
            catch_response=True,
        ) as response:
            if response.status_code == 422 and response.json().get("errors"):
                response.success()
            else:
                response.failure(f"invalid event not refused with 422: {response.text}")
