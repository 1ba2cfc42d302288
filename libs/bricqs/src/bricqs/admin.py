"""`bricqs-admin`: migrations, projects and keys (and, with the processor, the DLQ).

It is the only way to mint keys. Every command prints a human line, or JSON with
`--json`. The database comes from `--database-url` or `DATABASE_URL`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

import msgspec
import psycopg

from bricqs.keys import ENVIRONMENTS
from bricqs.storage import tenants
from bricqs.storage.migrate import migrate

Command = Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]


class AdminError(Exception):
    """A command that cannot be carried out; the message says why."""


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value))


async def _connect(args: argparse.Namespace) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(args.database_url, autocommit=True)


async def cmd_migrate(args: argparse.Namespace) -> dict[str, Any]:
    applied = await asyncio.to_thread(migrate, args.database_url)
    return {"applied": applied, "message": f"applied {len(applied)} migration(s)"}


async def cmd_project_create(args: argparse.Namespace) -> dict[str, Any]:
    async with await _connect(args) as conn, conn.transaction():
        project = await tenants.create_project(conn, args.name)
        result: dict[str, Any] = {"project": asdict(project)}
        if args.with_keys:
            result["keys"] = {}
            for environment in ENVIRONMENTS:
                key, plaintext = await tenants.create_key(conn, project.project_id, environment)
                result["keys"][environment] = {**asdict(key), "key": plaintext}
    result["message"] = f"created project {project.project_id} ({project.name})"
    return result


async def cmd_project_list(args: argparse.Namespace) -> dict[str, Any]:
    async with await _connect(args) as conn:
        cursor = await conn.execute(
            "SELECT project_id, name, created_at FROM projects ORDER BY created_at"
        )
        rows = [tenants.Project(*row) for row in await cursor.fetchall()]
    lines = "\n".join(f"{p.project_id}  {p.name}" for p in rows)
    return {"projects": [asdict(p) for p in rows], "message": lines or "no projects"}


async def cmd_key_create(args: argparse.Namespace) -> dict[str, Any]:
    async with await _connect(args) as conn:
        project = await tenants.find_project(conn, args.project)
        if project is None:
            raise AdminError(f"no project {args.project!r} (give its id, or a unique name)")
        key, plaintext = await tenants.create_key(conn, project.project_id, args.env)
    return {
        "key": {**asdict(key), "key": plaintext},
        "message": f"{plaintext}\n(key {key.key_id}; shown once, store it now)",
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
        f"{k.key_id}  {k.environment}  {k.display_prefix}…"
        + (f"  revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "")
        for k in keys
    )
    return {"keys": [asdict(k) for k in keys], "message": lines or "no keys"}


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="bricqs-admin", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL URL (default: $DATABASE_URL)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(run=cmd_migrate)

    project = sub.add_parser("project", help="projects (tenants)")
    project_sub = project.add_subparsers(dest="action", required=True)
    create = project_sub.add_parser("create", help="create a project")
    create.add_argument("name")
    create.add_argument("--with-keys", action="store_true", help="also mint a live and a test key")
    create.set_defaults(run=cmd_project_create)
    project_sub.add_parser("list", help="list projects").set_defaults(run=cmd_project_list)

    key = sub.add_parser("key", help="API keys")
    key_sub = key.add_subparsers(dest="action", required=True)
    key_create = key_sub.add_parser("create", help="mint a key (printed once)")
    key_create.add_argument("--project", required=True, help="project id or unique name")
    key_create.add_argument("--env", required=True, choices=ENVIRONMENTS)
    key_create.set_defaults(run=cmd_key_create)
    key_revoke = key_sub.add_parser("revoke", help="revoke a key by id")
    key_revoke.add_argument("key_id")
    key_revoke.set_defaults(run=cmd_key_revoke)
    key_list = key_sub.add_parser("list", help="list a project's keys (never the plaintext)")
    key_list.add_argument("--project", required=True)
    key_list.set_defaults(run=cmd_key_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("set DATABASE_URL or pass --database-url")
    try:
        result = asyncio.run(args.run(args))
    except (AdminError, psycopg.Error) as exc:
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
