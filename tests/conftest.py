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


@dataclass(frozen=True)
class PgDatabase:
    """One migrated PostgreSQL database per test process, wiped back to its migrated state
    before each test: creating and dropping a database per test cost far more than the
    tests themselves."""

    name: str
    tables: tuple[str, ...]
    seed: tuple[tuple[str, tuple[str, ...], tuple[Any, ...]], ...]


async def _pg_snapshot(dsn: str, name: str) -> PgDatabase:
    connection = await asyncpg.connect(dsn)
    try:
        tables = tuple(
            row["tablename"]
            for row in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version' ORDER BY tablename"
            )
        )
        seed = []
        for table in tables:
            for record in await connection.fetch(f'SELECT * FROM "{table}"'):  # noqa: S608
                seed.append((table, tuple(record.keys()), tuple(record.values())))
    finally:
        await connection.close()
    return PgDatabase(name=name, tables=tables, seed=tuple(seed))


async def _pg_reset(dsn: str, database: PgDatabase) -> None:
    """Every row gone, the migration's own rows back, every sequence from 1."""
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            # Replica mode skips foreign-key triggers, so the order of deletes is free.
            await connection.execute("SET LOCAL session_replication_role = replica")
            for table in database.tables:
                await connection.execute(f'DELETE FROM "{table}"')  # noqa: S608
            for table, columns, values in database.seed:
                names = ", ".join(f'"{column}"' for column in columns)
                marks = ", ".join(f"${index}" for index in range(1, len(values) + 1))
                await connection.execute(
                    f'INSERT INTO "{table}" ({names}) VALUES ({marks})',  # noqa: S608
                    *values,
                )
            await connection.execute(
                "SELECT setval(c.oid, 1, false) FROM pg_class c WHERE c.relkind = 'S'"
            )
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[PgDatabase | None]:
    if not PG_URL:
        yield None
        return
    name = f"keysat_t_{uuid.uuid4().hex[:12]}"

    async def build() -> PgDatabase:
        admin = await asyncpg.connect(_asyncpg_dsn(PG_URL))
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        db = Database(_asyncpg_dsn(PG_URL, name).replace("postgresql://", "postgresql+asyncpg://"))
        await db.migrate()
        await db.dispose()
        return await _pg_snapshot(_asyncpg_dsn(PG_URL, name), name)

    database = asyncio.run(build())
    yield database

    async def drop() -> None:
        admin = await asyncpg.connect(_asyncpg_dsn(PG_URL))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    asyncio.run(drop())


@pytest.fixture
def database_url(
    tmp_path: Path, sqlite_template: Path, pg_database: PgDatabase | None
) -> Iterator[str]:
    """A migrated database holding nothing but what the migrations put there; the URL in
    KEYSAT_DATABASE_URL form."""
    if pg_database is None or PG_URL is None:
        path = tmp_path / "keysat.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    dsn = _asyncpg_dsn(PG_URL, pg_database.name)
    asyncio.run(_pg_reset(dsn, pg_database))
    yield dsn


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
