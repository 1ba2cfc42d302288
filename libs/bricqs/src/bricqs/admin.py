"""`bricqs-admin`: migrations, projects, keys, the dead-letter streams, leaderboard rebuilds.

It is the only way to mint keys. Every command prints a human line, or JSON with
`--json`. The database comes from `--database-url` or `DATABASE_URL`; Redis (for the
`dlq` commands) from `--redis-url` or `REDIS_URL`; with neither, from a running
`make run` (its `.data/local-stack.json`). Options go before or after the command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from redis.exceptions import RedisClusterException, RedisError

from bricqs.admin_dlq import DeadLetterAdminError, add_dlq_commands
from bricqs.admin_leaderboards import LeaderboardAdminError, add_leaderboard_commands
from bricqs.keys import ENVIRONMENTS
from bricqs.local_stack import read_local_stack
from bricqs.storage import tenants
from bricqs.storage.migrate import (
    DEFAULT_ATTEMPTS,
    DEFAULT_LOCK_TIMEOUT_MS,
    MigrationError,
    collation_warning,
    migrate,
)
from bricqs.storage.pools import command_connection
from bricqs.storage.tenants import SCOPES, Scope

# What a browser sends as Origin: scheme, host and maybe a port; nothing else.
ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?")

Command = Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]


class AdminError(Exception):
    """A command that cannot be carried out; the message says why."""


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value))


async def _connect(args: argparse.Namespace) -> psycopg.AsyncConnection[Any]:
    return await command_connection(args.database_url)


async def cmd_migrate(args: argparse.Namespace) -> dict[str, Any]:
    applied = await asyncio.to_thread(
        migrate,
        args.database_url,
        lock_timeout_ms=args.lock_timeout_ms,
        attempts=args.attempts,
    )
    result: dict[str, Any] = {"applied": applied, "message": f"applied {len(applied)} migration(s)"}
    warning = await asyncio.to_thread(collation_warning, args.database_url)
    if warning is not None:
        result["warnings"] = [warning]
        result["message"] += f"; warning: {warning}"
    return result


async def cmd_project_create(args: argparse.Namespace) -> dict[str, Any]:
    async with await _connect(args) as conn, conn.transaction():
        project = await tenants.create_project(conn, args.name)
        result: dict[str, Any] = {"project": asdict(project)}
        if args.with_keys:
            result["keys"] = {}
            for environment in ENVIRONMENTS:
                key, plaintext = await tenants.create_key(
                    conn, project.project_id, environment, scopes=args.scopes
                )
                result["keys"][environment] = {**asdict(key), "key": plaintext}
    result["message"] = f"created project {project.project_id} ({project.name})"
    return result


async def cmd_project_list(args: argparse.Namespace) -> dict[str, Any]:
    async with await _connect(args) as conn:
        rows = await tenants.list_projects(conn)
    lines = "\n".join(f"{p.project_id}  {p.name}" for p in rows)
    return {"projects": [asdict(p) for p in rows], "message": lines or "no projects"}


async def cmd_project_limits(args: argparse.Namespace) -> dict[str, Any]:
    async with await _connect(args) as conn:
        project = await tenants.find_project(conn, args.project)
        if project is None:
            raise AdminError(f"no project {args.project!r} (give its id, or a unique name)")
        await tenants.set_rate_limit(conn, project.project_id, args.per_second, args.burst)
    shown = (
        "defaults"
        if args.per_second is None and args.burst is None
        else (f"{args.per_second}/s, burst {args.burst}")
    )
    return {
        "project_id": project.project_id,
        "rate_limit_per_second": args.per_second,
        "rate_limit_burst": args.burst,
        "message": f"{project.project_id}: rate limit {shown} (applies within the key cache TTL)",
    }


async def cmd_project_cors(args: argparse.Namespace) -> dict[str, Any]:
    async with await _connect(args) as conn:
        project = await tenants.find_project(conn, args.project)
        if project is None:
            raise AdminError(f"no project {args.project!r} (give its id, or a unique name)")
        await tenants.set_cors_origins(conn, project.project_id, args.origins)
    shown = ", ".join(args.origins) or "none (no cross-origin access)"
    return {
        "project_id": project.project_id,
        "cors_origins": args.origins,
        "message": f"{project.project_id}: browser origins {shown}"
        " (applies within the key cache TTL)",
    }


async def cmd_project_retention(args: argparse.Namespace) -> dict[str, Any]:
    async with await _connect(args) as conn:
        project = await tenants.find_project(conn, args.project)
        if project is None:
            raise AdminError(f"no project {args.project!r} (give its id, or a unique name)")
        days = None if args.forever else args.days
        try:
            await tenants.set_retention(conn, project.project_id, days)
        except ValueError as exc:
            raise AdminError(str(exc)) from exc
    shown = "forever" if days is None else f"{days} days"
    return {
        "project_id": project.project_id,
        "retention_days": days,
        "message": f"{project.project_id}: events and facts kept {shown}"
        " (older ones go at the processor's next retention round)",
    }


async def cmd_key_create(args: argparse.Namespace) -> dict[str, Any]:
    async with await _connect(args) as conn:
        project = await tenants.find_project(conn, args.project)
        if project is None:
            raise AdminError(f"no project {args.project!r} (give its id, or a unique name)")
        key, plaintext = await tenants.create_key(
            conn, project.project_id, args.env, scopes=args.scopes
        )
    return {
        "key": {**asdict(key), "key": plaintext},
        "message": f"{plaintext}\n(key {key.key_id}, scopes {','.join(key.scopes)};"
        " shown once, store it now)",
    }


async def cmd_key_revoke(args: argparse.Namespace) -> dict[str, Any]:
    async with await _connect(args) as conn:
        revoked = await tenants.revoke_key(conn, args.key_id)
    if not revoked:
        raise AdminError(f"no active key {args.key_id!r}")
    return {"revoked": args.key_id, "message": f"revoked {args.key_id}"}


async def cmd_key_list(args: argparse.Namespace) -> dict[str, Any]:
    async with await _connect(args) as conn:
        project = await tenants.find_project(conn, args.project)
        if project is None:
            raise AdminError(f"no project {args.project!r}")
        keys = await tenants.list_keys(conn, project.project_id)
    lines = "\n".join(
        f"{k.key_id}  {k.environment}  {k.display_prefix}…  {','.join(k.scopes)}"
        + (f"  revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "")
        for k in keys
    )
    return {"keys": [asdict(k) for k in keys], "message": lines or "no keys"}


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """Options every command takes; `default` is SUPPRESS on the commands' own parsers, so
    an option given before the command is not overwritten by its absence after it."""
    parser.add_argument("--json", action="store_true", default=default, help="print JSON")
    parser.add_argument(
        "--database-url",
        default=default,
        help="PostgreSQL URL (default: $DATABASE_URL, else the running `make run`'s)",
    )
    parser.add_argument(
        "--redis-url",
        default=default,
        help="Redis URL, for the dlq commands (default: $REDIS_URL, else `make run`'s)",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        default=default,
        help="the Redis URL is a seed node of a Redis Cluster (default: $REDIS_CLUSTER)",
    )


def _origins(text: str) -> list[str]:
    """`https://app.example,http://localhost:3000` as origins (empty: none)."""
    origins = [o.strip() for o in text.split(",") if o.strip()]
    bad = [o for o in origins if not ORIGIN.fullmatch(o)]
    if bad:
        raise argparse.ArgumentTypeError(
            f"an origin is scheme://host[:port], without a path: {', '.join(bad)}"
        )
    return origins


def _scopes(text: str) -> tuple[Scope, ...]:
    """`ingest,read` as scopes; argparse reports anything else as a usage error."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCOPES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"scopes are a comma-separated subset of {','.join(SCOPES)}; got {text!r}"
        )
    return tuple(s for s in SCOPES if s in names)


def _scopes_option(parser: argparse.ArgumentParser, what: str) -> None:
    """--scopes, defaulting to `ingest`: the key that leaks is the event key."""
    parser.add_argument(
        "--scopes",
        type=_scopes,
        default=("ingest",),
        help=f"{what}: comma-separated, of {','.join(SCOPES)} (default: ingest; events only)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="bricqs-admin", description=__doc__)
    _global_options(parser, None)
    parser.set_defaults(json=False, needs="database")
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, argparse.SUPPRESS)

    def add(subparsers: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        command: argparse.ArgumentParser = subparsers.add_parser(name, parents=[common], **kwargs)
        return command

    sub = parser.add_subparsers(dest="command", required=True)
    migrate_cmd = add(sub, "migrate", help="apply database migrations")
    migrate_cmd.add_argument(
        "--lock-timeout-ms",
        type=int,
        default=DEFAULT_LOCK_TIMEOUT_MS,
        help="longest wait for a table lock before the file is tried again",
    )
    migrate_cmd.add_argument(
        "--attempts",
        type=int,
        default=DEFAULT_ATTEMPTS,
        help="tries per file before giving up on a lock",
    )
    migrate_cmd.set_defaults(run=cmd_migrate, needs_session=True)

    project = add(sub, "project", help="projects (tenants)")
    project_sub = project.add_subparsers(dest="action", required=True)
    create = add(project_sub, "create", help="create a project")
    create.add_argument("name")
    create.add_argument("--with-keys", action="store_true", help="also mint a live and a test key")
    _scopes_option(create, "what the --with-keys keys may do")
    create.set_defaults(run=cmd_project_create)
    add(project_sub, "list", help="list projects").set_defaults(run=cmd_project_list)
    limits = add(
        project_sub,
        "limits",
        help="set a project's ingest rate limit per API key (omit both to reset)",
    )
    limits.add_argument("project", help="project id or unique name")
    limits.add_argument("--per-second", type=float, help="events per second per key (0: none)")
    limits.add_argument("--burst", type=int, help="bucket size (>= 100)")
    limits.set_defaults(run=cmd_project_limits)

    cors = add(project_sub, "cors", help="browser origins of a project's participant tokens")
    cors.add_argument("project", help="project id or unique name")
    origins_help = 'comma-separated, e.g. https://app.example ("": none, the default)'
    cors.add_argument("--origins", type=_origins, required=True, help=origins_help)
    cors.set_defaults(run=cmd_project_cors)

    retention = add(project_sub, "retention", help="how long a project keeps events and facts")
    retention.add_argument("project", help="project id or unique name")
    kept = retention.add_mutually_exclusive_group(required=True)
    kept.add_argument("--days", type=int, help="days of history kept (at least 7; default 400)")
    kept.add_argument("--forever", action="store_true", help="never drop this project's history")
    retention.set_defaults(run=cmd_project_retention)

    key = add(sub, "key", help="API keys")
    key_sub = key.add_subparsers(dest="action", required=True)
    key_create = add(key_sub, "create", help="mint a key (printed once)")
    key_create.add_argument("--project", required=True, help="project id or unique name")
    key_create.add_argument("--env", required=True, choices=ENVIRONMENTS)
    _scopes_option(key_create, "what the key may do")
    key_create.set_defaults(run=cmd_key_create)
    key_revoke = add(key_sub, "revoke", help="revoke a key by id")
    key_revoke.add_argument("key_id")
    key_revoke.set_defaults(run=cmd_key_revoke)
    key_list = add(key_sub, "list", help="list a project's keys (never the plaintext)")
    key_list.add_argument("--project", required=True)
    key_list.set_defaults(run=cmd_key_list)

    add_dlq_commands(sub, add)
    add_leaderboard_commands(sub, add)
    return parser


def _find_servers(args: argparse.Namespace) -> None:
    """Fill the URLs not given: from the environment, else from a running `make run`."""
    # A command holding a session (migrate's advisory lock) cannot go through a transaction
    # pooler: DATABASE_DIRECT_URL, when set, is the primary's own address for it, while
    # DATABASE_URL may point at PgBouncer for the services.
    direct = (
        os.environ.get("DATABASE_DIRECT_URL") if getattr(args, "needs_session", False) else None
    )
    args.database_url = args.database_url or direct or os.environ.get("DATABASE_URL")
    args.redis_url = args.redis_url or os.environ.get("REDIS_URL")
    cluster = os.environ.get("REDIS_CLUSTER", "").strip().lower() in ("1", "true", "yes")
    args.redis_cluster = getattr(args, "redis_cluster", False) or cluster
    wanted = args.database_url if args.needs == "database" else args.redis_url
    found = None if wanted else read_local_stack()
    if found is None:
        return
    stack, path = found
    args.database_url = args.database_url or stack.database_url
    args.redis_url = args.redis_url or stack.redis_url
    # On stderr, so `--json` output stays one document.
    print(f"bricqs-admin: using the servers of `make run` (from {path})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _find_servers(args)
    if args.needs == "database" and not args.database_url:
        parser.error(
            "set DATABASE_URL or pass --database-url (for the database of `make run`, run"
            " this from the folder `make run` runs in, or pass"
            " --database-url postgresql://bricqs@127.0.0.1:15432/bricqs)"
        )
    if args.needs == "redis" and not args.redis_url:
        parser.error(
            "set REDIS_URL or pass --redis-url (for `make run`'s: redis://127.0.0.1:16379/0)"
        )
    try:
        result = asyncio.run(args.run(args))
    except (
        AdminError,
        DeadLetterAdminError,
        LeaderboardAdminError,
        MigrationError,
        psycopg.Error,
        RedisError,
        RedisClusterException,
    ) as exc:
        if args.json:
            print(msgspec.json.encode({"error": str(exc)}).decode())
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        result.pop("message", None)
        print(msgspec.json.encode(result, enc_hook=_default).decode())
    else:
        print(result["message"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
