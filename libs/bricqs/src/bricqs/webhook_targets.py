"""Where webhooks may be sent: the api checks an endpoint's URL when it is saved, and the
dispatcher checks the addresses it resolves to before every connection, so a name that
later resolves elsewhere (DNS rebinding) still cannot reach an internal address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
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
    scheme, host, port, path = parse_url(url)
    try:
        literal: IpAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise UnsafeTarget(f"the host {host!r} does not resolve") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not addresses:
            raise UnsafeTarget(f"the host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = refuse_reason(address)
            if reason is not None:
                raise UnsafeTarget(f"the host {host!r} resolves to {reason} ({address})")
    return Target(scheme, host, port, path, str(addresses[0]))
