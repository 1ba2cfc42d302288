"""`make loadtest`: start the stack on loopback, run Locust headless, stop the stack.

    uv run --locked python -m loadtests.run [--smoke] [--layout split|shared]
        [--host URL --api-key KEY [--sync-host URL] [--api-host URL]] [-- ARGS]

Without --host it starts throwaway Redis and PostgreSQL (or uses --redis-url /
--database-url), a project whose live key the clients use, with the 20 rules of the
benchmark active (so sync requests do real mechanics work), one processor, the api, and
ingest under Granian (one worker each) laid out as in Kubernetes (`split`): the async
endpoints in one process, sync events in another (INGEST_ENDPOINTS), which Locust
reaches by its own address as the ingress routes them by path. `--layout shared` serves
every endpoint from one process instead, to compare. Locust runs with
loadtests/locust.conf; ARGS after `--` go to Locust as they are (`--offered-rate 300`,
`--run-time 2m`...). The exit code is Locust's: 0 when the SLOs held. CSV stats land in
.bench/loadtest/; the CPU each process of the stack used during the run is printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
SMOKE = ["--run-time", "3s", "--users", "10", "--spawn-rate", "10", "--offered-rate", "50"]


def run_locust(host: str, key: str, args: list[str], **urls: str) -> int:
    """Run Locust from loadtests/ (so locust.conf and `common` are found)."""
    (HERE.parent / ".bench" / "loadtest").mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).parent / "locust"), "--host", host, *args]
    env = {**os.environ, "BRICQS_API_KEY": key}
    env.update({f"LOADTEST_{name.upper()}": url for name, url in urls.items() if url})
    return subprocess.run(command, cwd=HERE, env=env, check=False).returncode


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (Granian's workers, PostgreSQL's backends)."""
    try:
        process = psutil.Process(pid)
        total = 0.0
        for each in [process, *process.children(recursive=True)]:
            times = each.cpu_times()
            total += times.user + times.system
    except psutil.Error:
        return 0.0
    return total


def main(argv: list[str] | None = None) -> int:
    """Run the load test; its exit code is Locust's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="3 s with 10 users (CI)")
    parser.add_argument("--host", help="an ingest service already running (skip the stack)")
    parser.add_argument("--api-key", help="its API key (with --host)")
    parser.add_argument("--sync-host", default="", help="with --host: where sync events go")
    parser.add_argument("--api-host", default="", help="with --host: the api, for reads")
    parser.add_argument(
        "--layout",
        choices=("split", "shared"),
        default="split",
        help="sync events served by their own ingest process (split) or with the rest",
    )
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of starting one")
    parser.add_argument("locust_args", nargs="*", help="passed to Locust (after --)")
    args = parser.parse_args(argv)
    extra = (SMOKE if args.smoke else []) + args.locust_args
    if args.host:
        if not args.api_key:
            parser.error("--host needs --api-key")
        return run_locust(
            args.host, args.api_key, extra, sync_host=args.sync_host, api_host=args.api_host
        )

    from bench.rule_engine import TWENTY_RULES
    from bench.stack import Stack

    stack = Stack.start(args.redis_url, args.database_url)
    try:
        project = stack.project("loadtest", TWENTY_RULES)
        services = {}
        if args.layout == "split":
            port, services["ingest"] = stack.granian(
                "bricqs_ingest.app:create_app", INGEST_ENDPOINTS="async"
            )
            sync_port, services["ingest-sync"] = stack.granian(
                "bricqs_ingest.app:create_app", INGEST_ENDPOINTS="sync"
            )
        else:
            port, services["ingest"] = stack.granian("bricqs_ingest.app:create_app")
            sync_port = port
        api_port, services["api"] = stack.granian("bricqs_api.app:create_app")
        _, services["processor"] = stack.processor()
        for server in stack.servers:
            services[server.name] = server.process
        before = {name: cpu_seconds(child.pid) for name, child in services.items()}
        code = run_locust(
            f"http://127.0.0.1:{port}",
            project.key,
            extra,
            sync_host=f"http://127.0.0.1:{sync_port}",
            api_host=f"http://127.0.0.1:{api_port}",
        )
        used = {
            name: round(cpu_seconds(child.pid) - before[name], 1)
            for name, child in services.items()
        }
        print(f"CPU seconds used during the run, by process (layout {args.layout}): {used}")
        return code
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
