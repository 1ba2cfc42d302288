"""Liveness and readiness endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from litestar import Response, Router, get

Check = Callable[[], Awaitable[Any]]


def health_router(checks: Callable[[], Mapping[str, Check]], timeout: float = 2.0) -> Router:
    """`/health/live` (the process answers) and `/health/ready` (every dependency answers).

    `checks` is called per request so it can reach clients made in the app's lifespan.
    """

    @get("/live", include_in_schema=False, sync_to_thread=False)
    def live() -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", include_in_schema=False)
    async def ready() -> Response[dict[str, Any]]:
        results: dict[str, str] = {}
        for name, check in checks().items():
            try:
                async with asyncio.timeout(timeout):
                    await check()
                results[name] = "ok"
            except Exception as exc:  # any failure means not ready; say which and why
                results[name] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in results.values())
        return Response(
            {"status": "ok" if ok else "unavailable", "checks": results},
            status_code=200 if ok else 503,
        )

    return Router(path="/health", route_handlers=[live, ready])
