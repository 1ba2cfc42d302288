"""The load test's own options, set in locust.conf (or on the command line)."""

from __future__ import annotations

from typing import Any

from locust import events


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    """Register the mix's and the SLO gate's options with Locust's parser."""
    mix = parser.add_argument_group("Bricqs mix")
    mix.add_argument(
        "--offered-rate",
        type=float,
        default=0.0,
        env_var="LOADTEST_OFFERED_RATE",
        help="Open loop: requests/s sent by all users together on a fixed schedule,"
        " whatever the answers take (0: closed loop at --user-rps per user)",
    )
    mix.add_argument(
        "--user-rps",
        type=float,
        default=10.0,
        env_var="LOADTEST_USER_RPS",
        help="Closed loop: requests/s each user sends at most, waiting for each answer",
    )
    mix.add_argument(
        "--sync-host",
        default="",
        env_var="LOADTEST_SYNC_HOST",
        help="Where sync events go (an ingest serving only them); default: --host",
    )
    mix.add_argument(
        "--api-host",
        default="",
        env_var="LOADTEST_API_HOST",
        help="The api service, for participant state and leaderboard reads (none: no reads)",
    )
    mix.add_argument(
        "--leaderboard", default="spenders", help="Code of the leaderboard whose top 10 is read"
    )
    mix.add_argument(
        "--sync-window",
        type=float,
        default=5.0,
        help="Seconds; windows with and without sync traffic alternate (0: always sync)",
    )
    slo = parser.add_argument_group("SLO gate (SPEC §7, the realistic mix)")
    for endpoint, default in (
        ("async-single", 50.0),
        ("batch", 100.0),
        ("sync", 250.0),
        ("api-reads", 100.0),
    ):
        slo.add_argument(
            f"--slo-{endpoint}-p99-ms",
            type=float,
            default=default,
            help=f"p99 bound of {endpoint.replace('-', ' ')} requests, ms",
        )
    slo.add_argument("--slo-max-error-ratio", type=float, default=0.001)
    slo.add_argument(
        "--slo-sync-interference",
        type=float,
        default=1.5,
        help="Bound on async single p99 with sync traffic over its p99 without",
    )
