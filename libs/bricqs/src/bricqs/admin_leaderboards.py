"""`bricqs-admin leaderboard rebuild CODE`: rebuild a board's current run from
PostgreSQL's source of truth (the ledger or criterion progress), in PostgreSQL and in its
Redis mirror, under the board's lock (writers wait meanwhile)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bricqs.keys import ENVIRONMENTS
from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.standings import rebuild
from bricqs.redis_connect import connect_redis
from bricqs.storage import tenants
from bricqs.storage.pools import command_connection
from bricqs.storage.standings import Standings

Adder = Callable[..., argparse.ArgumentParser]


class LeaderboardAdminError(Exception):
    """The rebuild cannot be done; the message says why."""


async def cmd_leaderboard_rebuild(args: argparse.Namespace) -> dict[str, Any]:
    """Rebuild one leaderboard of one project's environment."""
    if not args.redis_url:
        raise LeaderboardAdminError("set REDIS_URL or pass --redis-url: the mirror is rebuilt too")
    async with await command_connection(args.database_url) as conn:
        project = await tenants.find_project(conn, args.project)
        if project is None:
            raise LeaderboardAdminError(
                f"no project {args.project!r} (give its id, or a unique name)"
            )
        tenant = tenants.Tenant(project.project_id, args.env)
        board = (await RuleCache(0)(conn, tenant)).leaderboards.get(args.code)
        if board is None:
            raise LeaderboardAdminError(f"no active leaderboard {args.code!r} in {args.env}")
        redis = connect_redis(args.redis_url, cluster=args.redis_cluster, timeout_s=30)
        async with redis, conn.transaction():
            # A large board takes longer than a request's statement timeout would
            # allow; LOCAL, so nothing outlives the transaction behind PgBouncer.
            await conn.execute("SET LOCAL statement_timeout = 0")
            count = await rebuild(conn, Standings(redis), tenant, board, datetime.now(UTC))
    return {
        "leaderboard": args.code,
        "participants": count,
        "message": f"rebuilt {args.code!r}: {count} participant(s) ranked",
    }


def add_leaderboard_commands(sub: Any, add: Adder) -> None:
    """Add `leaderboard rebuild` to the admin command line (`add` makes a subcommand)."""
    leaderboard = add(sub, "leaderboard", help="leaderboards")
    leaderboard_sub = leaderboard.add_subparsers(dest="action", required=True)
    rebuild_cmd = add(
        leaderboard_sub, "rebuild", help="rebuild a board's current run from PostgreSQL"
    )
    rebuild_cmd.add_argument("code", help="the leaderboard's code")
    rebuild_cmd.add_argument("--project", required=True, help="project id or unique name")
    rebuild_cmd.add_argument("--env", default="live", choices=ENVIRONMENTS)
    rebuild_cmd.set_defaults(run=cmd_leaderboard_rebuild)
