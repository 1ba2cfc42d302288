"""`bricqs-dispatcher`: deliver the webhook outbox until SIGTERM or SIGINT.

Settings come from environment variables (see `settings`); a bad value exits with code 2
and a message naming the variable. On SIGTERM or SIGINT the dispatcher stops claiming,
lets the attempts in flight finish, records them, closes its pools and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from typing import Any

from psycopg_pool import AsyncConnectionPool

from bricqs.runtime import ShutdownSteps
from bricqs.settings import load_or_exit
from bricqs.storage.health import ping
from bricqs.storage.pools import database_pool
from bricqs.web.probes import ProbeServer
from bricqs_dispatcher import metrics
from bricqs_dispatcher.delivery import Dispatcher
from bricqs_dispatcher.http import Sender
from bricqs_dispatcher.settings import DispatcherSettings

log = logging.getLogger("bricqs.dispatcher")

# Claims and result records are short; a statement running longer is stuck behind a lock.
STATEMENT_TIMEOUT_MS = 10_000


def make_pool(settings: DispatcherSettings) -> AsyncConnectionPool[Any]:
    """The PostgreSQL pool (opened by the caller)."""
    return database_pool(
        settings.database_url,
        name="dispatcher",
        max_size=settings.database_pool_size,
        statement_timeout_ms=STATEMENT_TIMEOUT_MS,
        transaction_pooling=settings.database_transaction_pooling,
        check=True,
    )


def make_sender(settings: DispatcherSettings) -> Sender:
    """The HTTP client: keep-alive connections to each endpoint's checked address, no
    redirects, no proxies (a proxy would bypass the address checks)."""
    return Sender(
        response_limit_bytes=settings.response_limit_bytes,
        max_idle_per_target=settings.max_in_flight_per_endpoint,
    )


async def serve(settings: DispatcherSettings) -> None:
    """Deliver until a stop signal; then finish the attempts in flight and close."""
    pool = make_pool(settings)
    await pool.open(wait=False)
    sender = make_sender(settings)
    dispatcher = Dispatcher(settings, pool, sender)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, dispatcher.stop)

    async def database_check() -> None:
        async with pool.connection(timeout=2.0) as conn:
            await ping(conn)

    # A round waits at most on a pooled connection and one transaction, then idles for
    # the poll interval; a minute more than that without one is a loop that is stuck.
    live_bound = 60 + settings.poll_interval_ms / 1000

    def live() -> tuple[int, dict[str, Any]]:
        age = time.monotonic() - dispatcher.last_round
        alive = age < live_bound
        return (200 if alive else 503), {
            "status": "ok" if alive else "stalled",
            "round_age_seconds": round(age, 3),
            "bound_seconds": live_bound,
        }

    probes = ProbeServer(
        settings.metrics_host,
        settings.metrics_port,
        {"postgres": database_check},
        metrics=metrics.render,
        live=live,
        stopping=lambda: dispatcher.stopping,
    )
    if settings.metrics_port:
        await probes.start()
    try:
        await dispatcher.run()
    finally:
        steps = ShutdownSteps(log)
        await steps.run("probe server", probes.close())
        await steps.run("http client", sender.aclose())
        await steps.run("postgres pool", pool.close())
        if not steps.clean:
            steps.exit_now()


def main() -> int:
    """Entry point of the console script."""
    settings = load_or_exit(DispatcherSettings)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if not settings.webhook_secrets_keys:
        log.warning("WEBHOOK_SECRETS_KEYS is empty: endpoint secrets stay stored in clear")
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
