"""The PostgreSQL connection pool of every service, made in one place so that each one
works the same directly against PostgreSQL and behind PgBouncer in transaction mode.

A transaction pooler hands each transaction whichever server connection is free, so
nothing may live in a server session between transactions:

- No prepared statements: psycopg prepares a query on its fifth run in a connection,
  and the next transaction may land on a server session that never saw it. PgBouncer
  1.18 (Debian 12) cannot track them (`max_prepared_statements` came in 1.21), so
  with `transaction_pooling` psycopg never prepares (`prepare_threshold=None`): the
  engine's statements are few and batched, so parsing each one again costs little (see
  docs/scaling.md). Directly against PostgreSQL, psycopg's default stays: a deployment
  without a pooler keeps exactly the behaviour it had.
- No `SET` outside a transaction, and no startup `options` (PgBouncer 1.18 refuses the
  connection): with `transaction_pooling` the statement timeout is not sent, and comes
  from the role instead (`ALTER ROLE … SET statement_timeout`), which every server
  connection PgBouncer opens inherits. Directly, it is sent as a startup option.
- No session advisory locks: participants are locked per transaction
  (`storage.locks`); migrations need a session and run against PostgreSQL directly
  (`storage.migrate`).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

# Registers the dumpers of the batches' binary arrays in psycopg's global adapters, which
# each connection copies when first used: imported here, they come before any connection.
import bricqs.storage.binary_arrays  # noqa: F401


def connection_options(
    *, application_name: str, statement_timeout_ms: int | None, transaction_pooling: bool
) -> dict[str, Any]:
    """The psycopg connection arguments every connection of a service gets."""
    options: dict[str, Any] = {"application_name": application_name}
    if transaction_pooling:
        options["prepare_threshold"] = None
    elif statement_timeout_ms is not None:
        options["options"] = f"-c statement_timeout={statement_timeout_ms}"
    return options


def database_pool(
    url: str,
    *,
    name: str,
    max_size: int,
    statement_timeout_ms: int | None,
    transaction_pooling: bool,
    wait_timeout_ms: int = 30_000,
    connect_timeout_ms: int | None = None,
    check: bool = False,
) -> AsyncConnectionPool[Any]:
    """A pool of `url` for the service `name`, not yet open (the caller opens it, with
    `wait=False`: a database down at start-up is an outage like any other).

    `wait_timeout_ms` bounds the wait for a free connection; `check` tests each
    connection as it is handed out, so one broken by a server restart is found out
    before a transaction uses it.
    """
    options = connection_options(
        application_name=f"bricqs-{name}",
        statement_timeout_ms=statement_timeout_ms,
        transaction_pooling=transaction_pooling,
    )
    if connect_timeout_ms is not None:
        options["connect_timeout"] = max(1, connect_timeout_ms // 1000)
    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs=options,
        timeout=wait_timeout_ms / 1000,
        check=AsyncConnectionPool.check_connection if check else None,
        open=False,
        name=name,
    )


async def command_connection(url: str) -> psycopg.AsyncConnection[Any]:
    """One autocommit connection for a short command (`bricqs-admin`): no prepared
    statements, since `url` may lead to PgBouncer in transaction mode."""
    return await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None)
