"""Where webhooks may be sent: the api checks an endpoint's URL when it is saved, and the
dispatcher checks the addresses it resolves to before every connection, so a name that
later resolves elsewhere (DNS rebinding) still cannot reach an internal address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services: link-local or private anyway, named so the refusal says so.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


class UnsafeTarget(ValueError):
    """The URL is not one webhooks may be sent to; the message says why."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect, and the host name the request must carry."""

    scheme: str
    host: str
    port: int
    path: str
    address: str


def parse_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an http(s) URL without credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("the URL must start with https:// or http://")
    if not parts.hostname:
        raise UnsafeTarget("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeTarget("the URL must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeTarget("the URL's port is invalid") from exc
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, path


def refuse_reason(address: IpAddress) -> str | None:
    """Why an address is not a public one, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private or not address.is_global:
        return "a private or reserved address"
    return None


async def resolve_target(url: str, *, allow_private: bool) -> Target:
    """Resolve the URL's host and check every address it resolves to; connect to the
    first one (the one that was checked, whatever the name resolves to later)."""
    return await Resolver(ttl_seconds=0).target(url, allow_private=allow_private)


class Resolver:
    """Resolves and checks targets, keeping each host's addresses for `ttl_seconds` so a
    busy endpoint costs one lookup per TTL, not one per attempt. The check runs on every
    call, cached addresses included, and the address returned is the one connected to."""

    def __init__(self, *, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[tuple[str, int], tuple[float, list[IpAddress]]] = {}

    async def target(self, url: str, *, allow_private: bool) -> Target:
        """The checked target of `url`; UnsafeTarget when it may not be sent to."""
        scheme, host, port, path = parse_url(url)
        addresses = await self._addresses(host, port)
        if not allow_private:
            for address in addresses:
                reason = refuse_reason(address)
                if reason is not None:
                    raise UnsafeTarget(f"the host {host!r} resolves to {reason} ({address})")
        return Target(scheme, host, port, path, str(addresses[0]))

    async def _addresses(self, host: str, port: int) -> list[IpAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        now = self._clock()
        cached = self._cache.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise UnsafeTarget(f"the host {host!r} does not resolve") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not addresses:
            raise UnsafeTarget(f"the host {host!r} does not resolve")
        if self._ttl > 0:
            if len(self._cache) >= 10_000:
                self._cache.clear()  # a bound, not an LRU: refilled at one lookup per host
            self._cache[(host, port)] = (now + self._ttl, addresses)
        return addresses
