"""Load test of the realistic mix: the three ingest endpoints (async single, batch, sync)
and, given an api host, the api's reads (participant state, leaderboard top 10).

Each simulated client sends mostly single events, some batches and some sync events;
a share of its events carry idempotency keys and some are retried (expected answer:
202 with `duplicate: true`); some are invalid on purpose (expected: 422). Those provoked
answers are checked and reported under their own names, and are not errors.

Two ways to send (options in locust.conf, see common/options.py):
- open loop (`offered-rate` > 0): the users together send that many requests per second
  on a Poisson schedule, each request on its own greenlet, whatever the answers take;
- closed loop (`offered-rate = 0`): each user sends at most `user-rps` and waits.
Windows with and without sync traffic alternate (`sync-window`), so the SLO gate
(common/slo.py, run when Locust quits) compares async latency both ways in one run.

    cd loadtests && locust --host http://127.0.0.1:8000   # settings in locust.conf
    (the API key comes from BRICQS_API_KEY; `make loadtest` does all of it)
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import common.options  # noqa: F401  (registers the mix's options)
import gevent
import gevent.pool
from common.events import batch, event, invalid_event, participant
from common.gate import BATCH, HOTTEST, LEADERBOARD, NO_SYNC, SINGLE, STATE, SYNC
from common.pacing import Arrivals, percentile, sync_window
from common.slo import log
from locust import FastHttpUser, constant_throughput, events, task
from locust.env import Environment

# Shares of the mix, in requests; the api's reads only with an api host.
INGEST_MIX = {"single": 70, "batch": 10, "sync": 8, "retry": 6, "invalid": 6}
READS_MIX = {"state": 6, "leaderboard": 2}
HOTTEST_PARTICIPANT = "user_0"  # the Pareto draw's most frequent id (common/events.py)

# How late the open-loop schedule sent its requests (seconds): the generator's own delay.
LATENESS: list[float] = []
# When the load started (time.monotonic()), where the sync windows count from.
STARTED: list[float] = [time.monotonic()]


class IngestClient(FastHttpUser):
    """One API client; open or closed loop as locust.conf says."""

    # Open loop: one user's requests in flight at once share this many connections.
    concurrency = 32

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.rng = random.Random()
        self.headers = {
            "X-API-Key": os.environ["BRICQS_API_KEY"],
            "Content-Type": "application/json",
        }
        self.sync_url = (options.sync_host or self.host).rstrip("/") + SYNC
        self.api = options.api_host.rstrip("/")
        self.mix: dict[str, int] = {**INGEST_MIX, **(READS_MIX if self.api else {})}
        # Recently accepted events sent with an idempotency key, for retries.
        self.sent: deque[dict[str, Any]] = deque(maxlen=50)
        self.inflight = gevent.pool.Group()
        self._pace = constant_throughput(options.user_rps)
        if not options.offered_rate:
            # Start at a random phase: users spawned at a steady rate would otherwise
            # keep firing in lockstep, in bursts no real population of clients produces.
            gevent.sleep(self.rng.uniform(0, 1 / options.user_rps))

    def on_stop(self) -> None:
        self.inflight.join(timeout=self.environment.parsed_options.stop_timeout or 1)
        self.inflight.kill()

    def wait_time(self) -> float:
        return float(self._pace(self))

    @task
    def send(self) -> None:
        """Closed loop: one request of the mix. Open loop: the schedule, until stopped."""
        options = self.environment.parsed_options
        if not options.offered_rate:
            self.one_request()
            return
        arrivals = Arrivals(options.offered_rate / options.num_users, time.monotonic(), self.rng)
        while True:
            now = time.monotonic()
            for due in arrivals.due(now):
                LATENESS.append(now - due)
                self.inflight.spawn(self.one_request)
            gevent.sleep(max(0.0, arrivals.next_at - time.monotonic()))

    def one_request(self) -> None:
        """A request drawn from the mix; in a window without sync, a sync draw is skipped."""
        kind = self.rng.choices(list(self.mix), list(self.mix.values()))[0]
        with_sync = sync_window(
            time.monotonic() - STARTED[0],
            self.environment.parsed_options.sync_window,
        )
        if kind == "sync" and not with_sync:
            return
        actions: dict[str, Callable[[], None]] = {
            "single": lambda: self.single(NO_SYNC if not with_sync else ""),
            "batch": self.batch,
            "sync": self.sync,
            "retry": self.retry,
            "invalid": self.invalid,
            "state": self.state,
            "leaderboard": self.leaderboard,
        }
        actions[kind]()

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

    def single(self, tag: str) -> None:
        body = event(self.rng)
        answer = self._post(SINGLE, SINGLE + tag, body, 202)
        if answer is not None and "idempotency_key" in body:
            self.sent.append(body)

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

    def sync(self) -> None:
        body = event(self.rng, idempotency_share=0.05)
        hottest = body["participant_id"] == HOTTEST_PARTICIPANT
        self._post(self.sync_url, SYNC + (HOTTEST if hottest else ""), body, 200)

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

    def _get(self, url: str, name: str) -> None:
        with self.client.get(url, headers=self.headers, name=name, catch_response=True) as answer:
            if answer.status_code == 200:
                answer.success()
            else:
                answer.failure(f"expected 200, got {answer.status_code}: {answer.text}")

    def state(self) -> None:
        """One participant's state; mostly the active ones, as apps show their users."""
        who = participant(self.rng)
        self._get(f"{self.api}/api/v1/gamify/participants/{who}/state", STATE)

    def leaderboard(self) -> None:
        code = self.environment.parsed_options.leaderboard
        self._get(f"{self.api}/api/v1/gamify/leaderboards/{code}?limit=10", LEADERBOARD)


@events.test_start.add_listener
def start_windows(environment: Environment, **_: Any) -> None:
    """The sync windows count from the start of the load."""
    STARTED[:] = [time.monotonic()]


@events.quitting.add_listener
def report_lateness(environment: Environment, **_: Any) -> None:
    """How late the open-loop schedule sent (a busy generator sends late)."""
    if LATENESS:
        p99 = percentile(LATENESS, 0.99) or 0.0
        log.warning(
            "open loop: %d requests scheduled, sent late by p50 %.1f ms, p99 %.1f ms",
            len(LATENESS),
            1000 * (percentile(LATENESS, 0.5) or 0.0),
            1000 * p99,
        )
