"""GET /v1/admin/db-info (admin-api.md 19.1): where the database is, how big, when it was
last written, and how many rows the operator cares about."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.billing.models import DiscountCode, Invoice
from keysat.catalog.models import Policy, Product
from keysat.db import Database
from keysat.licensing.models import License, Machine
from keysat.operator.models import AuditEntry
from keysat.wire import format_optional_ts


def url_without_password(url: str) -> str:
    """The PostgreSQL URL as the operator configured it, minus any password (in the
    authority or as a query parameter) and minus the driver name we add."""
    parsed = make_url(url)
    query = {key: value for key, value in parsed.query.items() if key.lower() != "password"}
    cleaned = URL.create(
        drivername=parsed.get_backend_name(),
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=query,
    )
    return cleaned.render_as_string(hide_password=False)


def latest(*moments: datetime | None) -> datetime | None:
    present = [moment for moment in moments if moment is not None]
    return max(present) if present else None


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


async def _database_size(db: Database, session: AsyncSession) -> int:
    if db.sqlite_path is not None:
        return await asyncio.to_thread(_file_size, db.sqlite_path)
    try:
        size = await session.execute(sa.text("SELECT pg_database_size(current_database())"))
        return int(size.scalar_one())
    except sa.exc.DBAPIError:
        return -1


async def db_info(db: Database) -> dict[str, Any]:
    async with db.read() as session:

        async def scalar(query: sa.Select[Any]) -> Any:
            return (await session.execute(query)).scalar_one()

        def count(*where: Any, table: Any) -> sa.Select[Any]:
            return sa.select(sa.func.count()).select_from(table).where(*where)

        # Each column's newest value is read as a time, then compared in Python: the three
        # columns are compared as instants, not as text (admin-api.md 19.1).
        last_write = latest(
            await scalar(sa.select(sa.func.max(AuditEntry.occurred_at))),
            await scalar(sa.select(sa.func.max(Invoice.updated_at))),
            await scalar(sa.select(sa.func.max(License.issued_at))),
        )
        counts = {
            "products": await scalar(count(table=Product)),
            "policies": await scalar(count(table=Policy)),
            "licenses_total": await scalar(count(table=License)),
            "licenses_active": await scalar(count(License.status == "active", table=License)),
            "invoices_total": await scalar(count(table=Invoice)),
            "invoices_settled": await scalar(count(Invoice.status == "settled", table=Invoice)),
            "machines_active": await scalar(count(Machine.deactivated_at.is_(None), table=Machine)),
            "discount_codes": await scalar(count(table=DiscountCode)),
            "audit_log": await scalar(count(table=AuditEntry)),
        }
        size = await _database_size(db, session)
    return {
        "db_engine": "sqlite" if db.is_sqlite else "postgresql",
        "db_path": db.sqlite_path if db.sqlite_path is not None else url_without_password(db.url),
        "db_size_bytes": size,
        "last_write_at": format_optional_ts(last_write),
        "counts": {name: int(value) for name, value in counts.items()},
    }
