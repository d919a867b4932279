"""End-to-end fixtures: one real `keysat serve` process per test module.

Test modules here carry the `e2e` marker (`pytestmark`). Tests set up their own licenses
through the admin API on the shared server, so they stay independent of each other.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from keysat_licensing_client import Client

from e2e.harness import KeysatServer, launch_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeysatServer]:
    """A server with rate limits off, shared by the tests of one module."""
    with launch_server(tmp_path_factory.mktemp("keysat-e2e")) as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: KeysatServer) -> httpx.Client:
    """An httpx client for the admin API (master key), for setup."""
    return server.admin


@pytest.fixture(scope="module")
def sdk(server: KeysatServer) -> Client:
    """The official SDK's online client, pointed at the module's server."""
    return server.sdk()


@pytest.fixture(scope="module")
def raw(server: KeysatServer) -> Iterator[httpx.Client]:
    """A plain HTTP client without credentials, for checking exact status codes."""
    with httpx.Client(base_url=server.base_url, timeout=15.0) as client:
        yield client
