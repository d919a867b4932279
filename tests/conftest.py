"""Shared fixtures: a migrated database per test (SQLite file, or a PostgreSQL database
when KEYSAT_TEST_DATABASE_URL is set), the ASGI app, and an admin HTTP client."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from fakes.btcpay import FakeBTCPay
from fakes.rates import FakeRates
from fakes.zaprite import FakeZaprite
from keysat.app import build_state, create_app, prepare
from keysat.clock import clock
from keysat.db import Database
from keysat.settings import Settings, load_settings
from keysat.state import AppState
from support import ADMIN, ADMIN_KEY, TRUST_KEY

PG_URL = os.environ.get("KEYSAT_TEST_DATABASE_URL")


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    if database is not None:
        dsn = dsn.rsplit("/", 1)[0] + "/" + database
    return dsn


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "keysat.db"

    async def build() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        await db.migrate()
        await db.dispose()

    asyncio.run(build())
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    if not PG_URL:
        yield None
        return
    name = f"keysat_tpl_{uuid.uuid4().hex[:8]}"

    async def build() -> None:
        admin = await asyncpg.connect(_asyncpg_dsn(PG_URL))
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        db = Database(_asyncpg_dsn(PG_URL, name).replace("postgresql://", "postgresql+asyncpg://"))
        await db.migrate()
        await db.dispose()

    asyncio.run(build())
    yield name

    async def drop() -> None:
        admin = await asyncpg.connect(_asyncpg_dsn(PG_URL))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    asyncio.run(drop())


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path, pg_template: str | None) -> Iterator[str]:
    """A fresh, migrated database for one test; the URL in KEYSAT_DATABASE_URL form."""
    if pg_template is None or PG_URL is None:
        path = tmp_path / "keysat.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    name = f"keysat_t_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        admin = await asyncpg.connect(_asyncpg_dsn(PG_URL))
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
        await admin.close()

    async def drop() -> None:
        admin = await asyncpg.connect(_asyncpg_dsn(PG_URL))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    asyncio.run(create())
    yield _asyncpg_dsn(PG_URL, name)
    asyncio.run(drop())


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    def factory(**overrides: str) -> Settings:
        env = {
            "KEYSAT_ADMIN_API_KEY": ADMIN_KEY,
            "KEYSAT_DATABASE_URL": database_url,
            "KEYSAT_DATA_DIR": str(tmp_path / "data"),
            "KEYSAT_PUBLIC_URL": "http://keysat.test",
            "KEYSAT_RATE_LIMITS": "off",
        }
        env.update(overrides)
        return load_settings(env, dotenv=False)

    return factory


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    clock.reset()
    yield
    clock.reset()


@dataclass
class Server:
    state: AppState
    client: httpx.AsyncClient

    async def flush_logs(self) -> None:
        await self.state.write_behind.flush()

    async def admin_post(self, path: str, body: Any = None) -> httpx.Response:
        return await self.client.post(path, json=body if body is not None else {}, headers=ADMIN)

    async def admin_get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=ADMIN)

    async def admin_patch(self, path: str, body: Any) -> httpx.Response:
        return await self.client.patch(path, json=body, headers=ADMIN)

    async def admin_delete(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.delete(path, params=params, headers=ADMIN)


async def _close(server: Server) -> None:
    await server.client.aclose()
    await server.state.write_behind.flush()
    server.state.key_reader.close()
    await server.state.http.aclose()
    await server.state.db.dispose()


@pytest.fixture
async def make_server(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    """Start an in-process app with extra settings: `await make_server(KEYSAT_X="...")`."""
    opened: list[Server] = []

    async def factory(**overrides: str) -> Server:
        settings = make_settings(**overrides)
        state = build_state(settings, ADMIN_KEY, trust_root=TRUST_KEY.public_key())
        await prepare(state)
        app = create_app(state)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
        client = httpx.AsyncClient(transport=transport, base_url="http://keysat.test")
        server = Server(state=state, client=client)
        opened.append(server)
        return server

    yield factory
    for server in opened:
        await _close(server)


@pytest.fixture
async def server(make_server: Callable[..., Any]) -> Server:
    srv: Server = await make_server()
    return srv


@pytest.fixture
def fake_btcpay() -> Iterator[FakeBTCPay]:
    """A fake BTCPay Server on 127.0.0.1 (Greenfield API), with test controls."""
    with FakeBTCPay() as fake:
        yield fake


@pytest.fixture
def fake_zaprite() -> Iterator[FakeZaprite]:
    with FakeZaprite() as fake:
        yield fake


@pytest.fixture
def fake_rates() -> Iterator[FakeRates]:
    """Kraken, Coinbase and CoinGecko on one local server (USD 97 123.45 by default)."""
    with FakeRates() as fake:
        yield fake


@pytest.fixture
async def sandbox(make_server: Callable[..., Any]) -> Server:
    """A server in sandbox mode: the built-in sandbox provider takes the payments."""
    srv: Server = await make_server(KEYSAT_SANDBOX_MODE="true")
    return srv
