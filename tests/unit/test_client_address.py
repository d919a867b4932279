"""Client address: X-Forwarded-For only from trusted proxies, right-most untrusted hop."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request

from keysat.access.client import client_address


def request(peer: str | None, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": headers,
        "client": (peer, 1234) if peer else None,
    }
    return Request(scope)


PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


def test_untrusted_peer_ignores_forwarded_for() -> None:
    assert client_address(request("203.0.113.5", "1.2.3.4"), PROXIES) == "203.0.113.5"
    assert client_address(request("203.0.113.5", "1.2.3.4"), ()) == "203.0.113.5"


def test_trusted_peer_uses_rightmost_untrusted_hop() -> None:
    assert client_address(request("10.0.0.2", "1.2.3.4, 5.6.7.8, 10.0.0.9"), PROXIES) == "5.6.7.8"
    assert client_address(request("10.0.0.2", "10.0.0.3"), PROXIES) == "10.0.0.2"
    assert client_address(request("10.0.0.2"), PROXIES) == "10.0.0.2"


def test_ipv4_mapped_ipv6_is_reported_as_ipv4() -> None:
    assert client_address(request("::ffff:198.51.100.7"), ()) == "198.51.100.7"


def test_no_peer_means_no_address() -> None:
    assert client_address(request(None), PROXIES) is None
