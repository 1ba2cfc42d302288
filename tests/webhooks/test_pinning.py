"""A delivery connects to the address that was checked, never resolving the name again:
over HTTPS the certificate must still be the URL host's (a local TLS receiver with a CA
made by the test). Host addresses are looked up once per DNS_CACHE_SECONDS, and checked
on every attempt, cached or not."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import pytest
import trustme

from bricqs.webhook_targets import Resolver, Target, UnsafeTarget
from bricqs_dispatcher.http import Sender

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


async def tls_exchange(host: str, ca: trustme.CA) -> int:
    """POST over TLS to a receiver on 127.0.0.1 whose certificate names `hooks.test`, as a
    target pinned to 127.0.0.1 for `host`."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.test").configure_cert(server_context)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(NO_CONTENT)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    sender = Sender(response_limit_bytes=1024, max_idle_per_target=1, ssl_context=client_context)
    try:
        # `hooks.test` resolves nowhere: the connection can only be the pinned address.
        target = Target("https", host, port, "/in", "127.0.0.1")
        answer = await sender.post(target, {"webhook-id": "m1"}, b"{}")
        return answer.status
    finally:
        await sender.aclose()
        server.close()
        await server.wait_closed()


def test_https_to_a_pinned_address_verifies_the_host_names_certificate() -> None:
    ca = trustme.CA()
    assert asyncio.run(tls_exchange("hooks.test", ca)) == 204


def test_https_to_a_pinned_address_refuses_a_certificate_for_another_name() -> None:
    ca = trustme.CA()
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        asyncio.run(tls_exchange("other.test", ca))


class CountingLookups:
    """Counts the resolver's lookups and answers them with fixed addresses."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, address: str) -> None:
        self.calls = 0
        self.address = address
        counter = self

        async def getaddrinfo(self: Any, host: str, port: int, **kwargs: Any) -> list[Any]:
            counter.calls += 1
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (counter.address, port))]

        monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)


def test_addresses_are_cached_for_the_ttl_and_checked_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookups = CountingLookups(monkeypatch, "127.0.0.1")
    now = [0.0]
    resolver = Resolver(ttl_seconds=30, clock=lambda: now[0])

    async def attempts() -> list[str]:
        found = []
        for at in (0.0, 10.0, 29.0, 31.0):
            now[0] = at
            target = await resolver.target("https://hooks.test/in", allow_private=True)
            found.append(target.address)
            # The same cached addresses are refused where private targets are not allowed.
            with pytest.raises(UnsafeTarget, match="loopback"):
                await resolver.target("https://hooks.test/in", allow_private=False)
        return found

    assert asyncio.run(attempts()) == ["127.0.0.1"] * 4
    assert lookups.calls == 2  # at 0 s, and at 31 s once the first answer expired


def test_a_rebound_name_is_checked_again_once_its_cache_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookups = CountingLookups(monkeypatch, "93.184.215.14")
    now = [0.0]
    resolver = Resolver(ttl_seconds=5, clock=lambda: now[0])

    async def attempts() -> None:
        public = await resolver.target("https://hooks.test/in", allow_private=False)
        assert public.address == "93.184.215.14"
        lookups.address = "169.254.169.254"  # the name now points at the metadata service
        now[0] = 6.0
        with pytest.raises(UnsafeTarget, match="metadata"):
            await resolver.target("https://hooks.test/in", allow_private=False)

    asyncio.run(attempts())
