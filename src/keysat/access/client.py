"""The client address rule (access.md 6.8, public-api.md 1.8)."""

from __future__ import annotations

import functools
import ipaddress

from starlette.requests import Request

from keysat.settings import IPNetwork


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: tuple[IPNetwork, ...]
) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def client_address(request: Request, trusted_proxies: tuple[IPNetwork, ...]) -> str | None:
    """The peer address; behind a trusted proxy, the right-most untrusted forwarded hop."""
    if request.client is None:
        return None
    peer = _parse(request.client.host)
    if peer is None:
        return None
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return str(peer)
    hops = [
        part for header in request.headers.getlist("x-forwarded-for") for part in header.split(",")
    ]
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            break
        if not _trusted(address, trusted_proxies):
            return str(address)
    return str(peer)


def request_host(request: Request, trusted_proxies: tuple[IPNetwork, ...]) -> str | None:
    """The host the client asked for: `Host`, or behind a trusted proxy the host the proxy
    forwarded (its own entry is the right-most one of `X-Forwarded-Host`)."""
    peer = _parse(request.client.host) if request.client is not None else None
    if peer is not None and trusted_proxies and _trusted(peer, trusted_proxies):
        forwarded = [
            part.strip()
            for header in request.headers.getlist("x-forwarded-host")
            for part in header.split(",")
            if part.strip()
        ]
        if forwarded:
            return forwarded[-1]
    return request.headers.get("host")
