"""What the overview is built from (admin-api.md 19.2): db-info (19.1), and the time windows
of the license summary (5.3) and the revenue summary (8.4), checked at their edges."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from keysat.billing.models import Invoice
from keysat.clock import clock
from keysat.licensing.models import License, Machine
from keysat.operator.dbinfo import url_without_password
from keysat.wire import new_id
from support import (
    add_invoice,
    add_license,
    assert_error,
    create_policy,
    create_product,
    issue_license,
    poll,
    purchase,
    sandbox_action,
)

DB_INFO = "/v1/admin/db-info"
T = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
TICK = timedelta(microseconds=1)
DAY = timedelta(days=1)


async def add_row_license(server: Any, product_id: str, issued_at: datetime, status: str) -> None:
    async with server.state.db.write() as session:
        session.add(
            License(
                id=new_id(),
                product_id=product_id,
                status=status,
                issued_at=issued_at,
                updated_at=issued_at,
            )
        )


async def add_settled(
    server: Any, product_id: str, amount: int, settled_at: datetime | None, **fields: Any
) -> None:
    """An invoice row; `settled_at` None leaves it pending."""
    created = fields.pop("created_at", settled_at or T)
    invoice_id = new_id()
    async with server.state.db.write() as session:
        session.add(
            Invoice(
                id=invoice_id,
                kind="purchase",
                status="pending" if settled_at is None else "settled",
                product_id=product_id,
                amount_sats=amount,
                base_price_sats=amount,
                provider_kind="sandbox",
                provider_invoice_id=f"sbx_{invoice_id}",
                created_at=created,
                updated_at=settled_at or created,
                settled_at=settled_at,
            )
        )


# --- db-info -------------------------------------------------------------------------------


async def test_db_info_reports_engine_path_size_and_counts(server: Any) -> None:
    response = await server.admin_get(DB_INFO)
    assert response.status_code == 200
    fresh = response.json()
    assert set(fresh) == {"db_engine", "db_path", "db_size_bytes", "last_write_at", "counts"}
    assert fresh["last_write_at"] is None
    assert fresh["counts"] == {
        "products": 0,
        "policies": 0,
        "licenses_total": 0,
        "licenses_active": 0,
        "invoices_total": 0,
        "invoices_settled": 0,
        "machines_active": 0,
        "discount_codes": 0,
        "audit_log": 0,
    }
    db = server.state.db
    if db.is_sqlite:
        assert fresh["db_engine"] == "sqlite"
        assert fresh["db_path"] == db.sqlite_path
        size = await asyncio.to_thread(os.path.getsize, fresh["db_path"])
        assert fresh["db_size_bytes"] == size > 0
    else:
        assert fresh["db_engine"] == "postgresql"
        assert fresh["db_path"].startswith("postgresql://")
        assert fresh["db_path"].endswith(db.url.rsplit("/", 1)[1])
        assert fresh["db_size_bytes"] > 0

    product = await create_product(server, "acme")
    await create_product(server, "other")
    await create_policy(server, "acme", "pro")
    first = await add_license(server, product["id"])
    await add_license(server, product["id"])
    await add_license(server, product["id"], status="revoked")
    await add_invoice(server, product["id"], status="settled")
    await add_invoice(server, product["id"])
    await server.admin_post(
        "/v1/admin/discount-codes", {"code": "SAVE", "kind": "percent", "amount": 100}
    )
    at = clock.now()
    async with server.state.db.write() as session:
        for index, gone in enumerate([False, False, True]):
            session.add(
                Machine(
                    id=new_id(),
                    license_id=first,
                    fingerprint=f"fp{index}",
                    fingerprint_hash=f"hash{index}",
                    activated_at=at,
                    last_heartbeat_at=at,
                    deactivated_at=at if gone else None,
                )
            )
    counts = (await server.admin_get(DB_INFO)).json()["counts"]
    assert counts == {
        "products": 2,
        "policies": 1,
        "licenses_total": 3,
        "licenses_active": 2,
        "invoices_total": 2,
        "invoices_settled": 1,
        "machines_active": 2,
        "discount_codes": 1,
        "audit_log": 4,
    }


async def test_last_write_is_the_latest_of_audit_invoice_and_license(server: Any) -> None:
    product = await create_product(server, "acme")
    # Read the audit row's own time: it is stamped by the system clock.
    audited = datetime.fromisoformat(
        (await server.admin_get("/v1/admin/audit")).json()["entries"][0]["occurred_at"]
    )
    later = audited + timedelta(days=1)
    await add_settled(server, product["id"], 5, later)
    info = (await server.admin_get(DB_INFO)).json()
    assert info["last_write_at"] == later.isoformat(timespec="microseconds")
    latest = later + timedelta(hours=1)
    await add_row_license(server, product["id"], latest, "revoked")
    info = (await server.admin_get(DB_INFO)).json()
    assert info["last_write_at"] == latest.isoformat(timespec="microseconds")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://keysat:s3cret@db.internal:5432/keysat",
            "postgresql://keysat@db.internal:5432/keysat",
        ),
        (
            "postgresql+asyncpg://keysat@db.internal/keysat?sslmode=require&password=s3cret",
            "postgresql://keysat@db.internal/keysat?sslmode=require",
        ),
        ("postgresql+asyncpg://db.internal/keysat", "postgresql://db.internal/keysat"),
    ],
)
def test_the_database_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert url_without_password(url) == shown


async def test_db_info_needs_the_master_key(server: Any) -> None:
    assert (await server.client.get(DB_INFO)).status_code == 401
    wrong = {"Authorization": "Bearer wrong-key-wrong-key-wrong-key-wrong"}
    assert_error(await server.client.get(DB_INFO, headers=wrong), 403, "forbidden")


# --- license summary windows ---------------------------------------------------------------


async def test_license_summary_windows_are_exact(server: Any) -> None:
    product = await create_product(server, "acme")
    clock.freeze(T)
    for issued_at, status in [
        (T, "active"),
        (T - DAY, "active"),
        (T - DAY - TICK, "suspended"),
        # The same UTC day as the 24 h threshold, but before it: outside the window.
        (T - DAY - timedelta(hours=1), "active"),
        (T - 7 * DAY, "revoked"),
        (T - 7 * DAY - TICK, "active"),
    ]:
        await add_row_license(server, product["id"], issued_at, status)
    response = await server.admin_get("/v1/admin/licenses/summary")
    assert response.status_code == 200
    assert response.json() == {
        "total": 6,
        "active": 4,
        "suspended": 1,
        "revoked": 1,
        "last_24h": 2,
        "last_7d": 5,
    }
    # A microsecond later the oldest member of each window leaves it.
    clock.freeze(T + TICK)
    summary = (await server.admin_get("/v1/admin/licenses/summary")).json()
    assert (summary["last_24h"], summary["last_7d"]) == (1, 4)


async def test_license_counts_cover_every_status(server: Any) -> None:
    product = await create_product(server, "acme")
    other = await create_product(server, "other")
    policy = await create_policy(server, "acme", "pro")
    await add_license(server, product["id"], policy["id"])
    await add_license(server, product["id"], policy["id"], status="revoked")
    await add_license(server, product["id"])
    await create_product(server, "unsold")
    await add_license(server, other["id"])
    response = await server.admin_get("/v1/admin/licenses/counts")
    assert response.json() == {
        "by_product": {product["id"]: 3, other["id"]: 1},
        "by_policy": {policy["id"]: 2},
    }


# --- revenue summary windows ---------------------------------------------------------------


async def test_revenue_windows_use_the_settlement_time(server: Any) -> None:
    product = await create_product(server, "acme")
    clock.freeze(T)
    # Powers of two: each sum names exactly the invoices it contains.
    for amount, settled_at in [
        (1, T),
        (2, T - DAY),
        (4, T - DAY - TICK),
        (8, T - 7 * DAY),
        (16, T - 7 * DAY - TICK),
        (32, T - 30 * DAY),
        (64, T - 30 * DAY - TICK),
        (0, T - timedelta(hours=1)),
    ]:
        await add_settled(server, product["id"], amount, settled_at)
    await add_settled(server, product["id"], 128, None)
    # Created long ago, settled just now (a late payment): counted by its settlement.
    await add_settled(server, product["id"], 256, T - timedelta(minutes=5), created_at=T - 60 * DAY)
    await add_settled(server, product["id"], 512, T - timedelta(hours=2))
    response = await server.admin_get("/v1/admin/revenue/summary")
    assert response.status_code == 200
    assert response.json() == {
        "total_sats": 1 + 2 + 4 + 8 + 16 + 32 + 64 + 256 + 512,
        "last_24h_sats": 1 + 2 + 256 + 512,
        "last_7d_sats": 1 + 2 + 4 + 8 + 256 + 512,
        "last_30d_sats": 1 + 2 + 4 + 8 + 16 + 32 + 256 + 512,
        "settled_paid_invoice_count": 9,
    }
    clock.freeze(T + TICK)
    later = (await server.admin_get("/v1/admin/revenue/summary")).json()
    assert later["last_24h_sats"] == 1 + 256 + 512
    assert later["last_7d_sats"] == 1 + 2 + 4 + 256 + 512
    assert later["last_30d_sats"] == 1 + 2 + 4 + 8 + 16 + 256 + 512


async def test_revenue_windows_follow_the_sandbox_test_clock(sandbox: Any) -> None:
    """The windows and settled_at share the business clock: two days after a payment on
    the sandbox test clock it has left the 24 h window but not the 7 d one."""
    await create_product(sandbox, "acme", price_sats=7000)
    bought = await purchase(sandbox, "acme")
    await sandbox_action(sandbox, bought["invoice_id"], "pay")
    assert (await poll(sandbox, bought["invoice_id"]))["status"] == "settled"
    summary = (await sandbox.admin_get("/v1/admin/revenue/summary")).json()
    assert (summary["last_24h_sats"], summary["last_7d_sats"]) == (7000, 7000)

    advanced = await sandbox.admin_post("/v1/admin/sandbox/clock/advance", {"days": 2})
    assert advanced.status_code == 200, advanced.text
    summary = (await sandbox.admin_get("/v1/admin/revenue/summary")).json()
    assert summary["last_24h_sats"] == 0
    assert (summary["last_7d_sats"], summary["total_sats"]) == (7000, 7000)
    licenses = (await sandbox.admin_get("/v1/admin/licenses/summary")).json()
    assert (licenses["last_24h"], licenses["last_7d"]) == (0, 1)


async def test_manual_licenses_bring_no_revenue(server: Any) -> None:
    await create_product(server, "acme")
    await issue_license(server, "acme")
    async with server.state.db.read() as session:
        assert (await session.execute(sa.select(sa.func.count(Invoice.id)))).scalar_one() == 0
    summary = (await server.admin_get("/v1/admin/revenue/summary")).json()
    assert summary == {
        "total_sats": 0,
        "last_24h_sats": 0,
        "last_7d_sats": 0,
        "last_30d_sats": 0,
        "settled_paid_invoice_count": 0,
    }
