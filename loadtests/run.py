"""`make loadtest`: start the stack on loopback, run Locust headless, stop the stack.

    uv run --locked python -m loadtests.run [--smoke] [--host URL --api-key KEY] [-- ARGS]

Without --host it starts throwaway Redis and PostgreSQL (or uses REDIS_URL/DATABASE_URL
when given as --redis-url/--database-url), a project whose live key the clients use,
with the 20 rules of the benchmark active (so sync requests do real mechanics work),
ingest under Granian (one worker) and one processor. Locust runs with
loadtests/locust.conf; ARGS after `--` go to Locust as they are (`--processes 2`,
`--users 200`, `--run-time 2m`...). The exit code is Locust's: 0 when the SLOs held.
CSV stats land in .bench/loadtest/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SMOKE = ["--run-time", "3s", "--users", "10", "--spawn-rate", "10"]


def run_locust(host: str, key: str, args: list[str]) -> int:
    """Run Locust from loadtests/ (so locust.conf and `common` are found)."""
    (HERE.parent / ".bench" / "loadtest").mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).parent / "locust"), "--host", host, *args]
    env = {**os.environ, "BRICQS_API_KEY": key}
    return subprocess.run(command, cwd=HERE, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    """Run the load test; its exit code is Locust's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="3 s with 10 users (CI)")
    parser.add_argument("--host", help="an ingest service already running (skip the stack)")
    parser.add_argument("--api-key", help="its API key (with --host)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of starting one")
    parser.add_argument("locust_args", nargs="*", help="passed to Locust (after --)")
    args = parser.parse_args(argv)
    extra = (SMOKE if args.smoke else []) + args.locust_args
    if args.host:
        if not args.api_key:
            parser.error("--host needs --api-key")
        return run_locust(args.host, args.api_key, extra)

    from bench.rule_engine import TWENTY_RULES
    from bench.stack import Stack

    stack = Stack.start(args.redis_url, args.database_url)
    try:
        project = stack.project("loadtest", TWENTY_RULES)
        port, _ = stack.granian("bricqs_ingest.app:create_app")
        stack.processor()
        return run_locust(f"http://127.0.0.1:{port}", project.key, extra)
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
