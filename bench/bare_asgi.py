"""Reference app: the ceiling of an HTTP -> Redis hop in Python on this machine.

A bare ASGI callable, no framework: read the body, decode it with msgspec, one XADD with
redis-py (hiredis), answer 202 with the stream id. No auth, validation, metrics or ids.
The benchmark serves it under Granian exactly like the ingest service, on the same loop:

    granian --interface asgi --workers 1 --loop uvloop bench.bare_asgi:app
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
from redis.asyncio import Redis

_decoder = msgspec.json.Decoder()
_redis: Redis | None = None
STREAM = "bench:bare"
LOOP = "uvloop"
"""The event loop the services are shipped with (Dockerfile, `make run`): the bench serves
this app and ingest on it."""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The whole app."""
    global _redis
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _redis is not None:
                    await _redis.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/health/ready":
        await _answer(send, 200, b'{"status":"ok"}')
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    try:
        _decoder.decode(body)
    except msgspec.DecodeError:
        await _answer(send, 400, b'{"error":"malformed_json"}')
        return
    assert _redis is not None
    message_id = await _redis.xadd(STREAM, {"e": body})
    await _answer(send, 202, b'{"accepted":true,"message_id":"' + message_id + b'"}')


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
