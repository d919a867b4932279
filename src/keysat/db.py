"""Engine, sessions, column types and migrations on start.

One code path serves SQLite and PostgreSQL. On SQLite every write transaction starts with
`BEGIN IMMEDIATE`, so a transaction that reads and then writes can never fail half-way on a
lock upgrade, and writers of one process queue on an asyncio lock instead of spinning on
SQLite's busy timeout.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_BEGIN_OPTION = "keysat_begin"


class MigrationError(Exception):
    """A migration failed; the database was left as it was."""


def sqlite_timestamp(value: datetime) -> str:
    """The one text form of a timestamp on SQLite: fixed width, so text order is time order."""
    if value.tzinfo is None:
        raise ValueError("naive datetimes are never stored")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC instants; fixed-width text on SQLite so text order is time order."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(32))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return sqlite_timestamp(value)
        if value.tzinfo is None:
            raise ValueError("naive datetimes are never stored")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return datetime.fromisoformat(value).astimezone(UTC)
        assert isinstance(value, datetime)
        return value.astimezone(UTC)


Id = sa.String(36).with_variant(postgresql.UUID(as_uuid=False), "postgresql")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Database:
    def __init__(self, url: str, *, pool_size: int = 20) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self._ensure_sqlite_dir(url)
            # hide_parameters: a logged database error must not carry the statement's
            # values, which include CSRF tokens, webhook secrets and the signing key.
            self.engine: AsyncEngine = create_async_engine(
                url,
                hide_parameters=True,
                json_serializer=_json_dumps,
                pool_size=pool_size,
                max_overflow=0,
                connect_args={"timeout": 30, "check_same_thread": False},
            )
            self._install_sqlite_hooks()
        else:
            self.engine = create_async_engine(
                url,
                hide_parameters=True,
                json_serializer=_json_dumps,
                pool_size=pool_size,
                max_overflow=10,
            )
        self._write_lock = asyncio.Lock()

    @property
    def sqlite_path(self) -> str | None:
        """The database file, for SQLite; None for PostgreSQL."""
        if not self.is_sqlite:
            return None
        return self.url.split(":///", 1)[1]

    @staticmethod
    def _ensure_sqlite_dir(url: str) -> None:
        path = url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    def _install_sqlite_hooks(self) -> None:
        sync_engine = self.engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control away from the driver so BEGIN is ours to choose.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(sync_engine, "begin")
        def _on_begin(connection: Connection) -> None:
            mode = connection.get_execution_options().get(_BEGIN_OPTION, "BEGIN")
            connection.exec_driver_sql(mode)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            yield session

    @asynccontextmanager
    async def writer_turn(self) -> AsyncIterator[None]:
        """This process's turn to write, for writers that bypass `write()` (SQLite only)."""
        async with self._write_lock:
            yield

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One write transaction: committed on success, rolled back on any exception."""
        if self.is_sqlite:
            async with self._write_lock:
                async with self._session(_BEGIN_OPTION, "BEGIN IMMEDIATE") as session:
                    yield session
        else:
            async with self._session() as session:
                yield session

    @asynccontextmanager
    async def _session(self, *option: str) -> AsyncIterator[AsyncSession]:
        async with self.engine.connect() as connection:
            if option:
                await connection.execution_options(**{option[0]: option[1]})
            async with AsyncSession(bind=connection, expire_on_commit=False) as session:
                async with session.begin():
                    yield session

    async def migrate(self, script_location: Path = MIGRATIONS_DIR) -> None:
        """Bring the schema to the newest revision, all or nothing."""
        async with self.engine.connect() as connection:
            if self.is_sqlite:
                await connection.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
            try:
                await connection.run_sync(_upgrade, script_location)
            except Exception as exc:
                raise MigrationError(f"{type(exc).__name__}: {exc}") from exc

    async def dispose(self) -> None:
        await self.engine.dispose()


def _upgrade(connection: Connection, script_location: Path) -> None:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["connection"] = connection
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Table rebuilds in batch migrations must not fire cascades; keys are re-checked
        # with foreign_key_check before the commit. The pragma only works outside a
        # transaction, so it goes straight to the driver.
        _driver_execute(connection, "PRAGMA foreign_keys=OFF")
    try:
        with connection.begin(), warnings.catch_warnings():
            # Batch table rebuilds reflect neighbouring tables, and SQLite cannot reflect
            # expression indexes; the migrations recreate those themselves.
            warnings.filterwarnings(
                "ignore", "Skipped unsupported reflection of expression-based index"
            )
            if not sqlite:
                # Several processes may start at once; one migrates, the others wait.
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
            command.upgrade(config, "head")
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"foreign key check failed on table {broken[0][0]}")
    finally:
        if sqlite:
            _driver_execute(connection, "PRAGMA foreign_keys=ON")


def _driver_execute(connection: Connection, sql: str) -> None:
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
    finally:
        cursor.close()
