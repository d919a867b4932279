"""Helpers for the subscription tests (billing.md 6, 12.4): a monthly shop, subscribing,
running the renewal worker at a chosen business time, and reading subscription state."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from keysat.billing.models import Invoice
from keysat.clock import clock
from keysat.licensing.models import License
from keysat.subscriptions.models import Subscription, SubscriptionCycle
from support import ADMIN, create_policy, create_product, poll, purchase, sandbox_action

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
PERIOD = 30
GRACE = 7
CENTS = 2_500
SATS = 50_000
RATE = 500_000_000


def at(month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


def ts(moment: datetime) -> str:
    """The wire form of a timestamp (RFC 3339, microseconds, +00:00)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


async def pin_usd(server: Any, units: str = "50000") -> None:
    response = await server.client.put(
        "/v1/admin/rates/pins/USD", json={"units_per_btc": units}, headers=ADMIN
    )
    assert response.status_code == 200, response.text


async def monthly_shop(
    server: Any,
    *,
    usd: bool = True,
    price_sats: int = SATS,
    slug: str = "monthly",
    **policy: Any,
) -> dict[str, Any]:
    """Product `acme` (2 500 ¢ with a 50 000 USD/BTC pin, or `price_sats`) and a recurring
    policy of 30 days with 7 days of grace; returns the policy."""
    if usd:
        await create_product(
            server, "acme", price_sats=None, price_currency="USD", price_value=CENTS
        )
        await pin_usd(server)
    else:
        await create_product(server, "acme", price_sats=price_sats)
    fields: dict[str, Any] = {
        "is_recurring": True,
        "renewal_period_days": PERIOD,
        "grace_period_days": GRACE,
        **policy,
    }
    return await create_policy(server, "acme", slug, **fields)


@dataclass
class Subscribed:
    invoice_id: str
    license_id: str
    license_key: str
    subscription_id: str


async def subscribe(
    server: Any, email: str = "ada@example.com", policy_slug: str = "monthly"
) -> Subscribed:
    """A paid sandbox purchase of the recurring policy, settled at the business clock's now."""
    bought = await purchase(server, "acme", policy_slug=policy_slug, buyer_email=email)
    await sandbox_action(server, bought["invoice_id"], "pay")
    polled = await poll(server, bought["invoice_id"])
    sub = await subscription_of(server, polled["license_id"])
    return Subscribed(bought["invoice_id"], polled["license_id"], polled["license_key"], sub.id)


async def start_trial(
    server: Any, email: str = "ada@example.com", policy_slug: str = "monthly"
) -> Subscribed:
    bought = await purchase(server, "acme", policy_slug=policy_slug, buyer_email=email)
    assert bought["amount_sats"] == 0 and bought["license_key"], bought
    sub = await subscription_of(server, bought["license_id"])
    return Subscribed(bought["invoice_id"], bought["license_id"], bought["license_key"], sub.id)


async def tick(server: Any, moment: datetime) -> None:
    """One renewals tick with the business clock frozen at `moment`."""
    clock.freeze(moment)
    await server.state.jobs.job("renewals").tick(clock.now())


async def subscription_of(server: Any, license_id: str) -> Subscription:
    async with server.state.db.read() as session:
        query = sa.select(Subscription).where(Subscription.license_id == license_id)
        return (await session.execute(query)).scalar_one()


async def subscription_row(server: Any, subscription_id: str) -> Subscription:
    async with server.state.db.read() as session:
        row = await session.get(Subscription, subscription_id)
    assert row is not None
    return row


async def license_row(server: Any, license_id: str) -> License:
    async with server.state.db.read() as session:
        row = await session.get(License, license_id)
    assert row is not None
    return row


async def cycles(server: Any, subscription_id: str) -> list[SubscriptionCycle]:
    async with server.state.db.read() as session:
        query = (
            sa.select(SubscriptionCycle)
            .where(SubscriptionCycle.subscription_id == subscription_id)
            .order_by(SubscriptionCycle.cycle_number)
        )
        return list((await session.execute(query)).scalars())


def windows(rows: list[SubscriptionCycle]) -> list[tuple[int, datetime, datetime]]:
    return [(row.cycle_number, row.cycle_start_at, row.cycle_end_at) for row in rows]


async def renewal_invoices(server: Any, subscription_id: str | None = None) -> list[Invoice]:
    async with server.state.db.read() as session:
        query = sa.select(Invoice).where(Invoice.kind == "renewal")
        if subscription_id is not None:
            query = query.where(Invoice.subscription_id == subscription_id)
        query = query.order_by(Invoice.created_at, Invoice.id)
        return list((await session.execute(query)).scalars())


async def validate(server: Any, key: str, **fields: Any) -> dict[str, Any]:
    response = await server.client.post("/v1/validate", json={"key": key, **fields})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def run_job(server: Any, name: str) -> httpx.Response:
    return await server.admin_post(f"/v1/admin/jobs/{name}/run")


def data_of(envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [envelope["data"] for envelope in envelopes]


def compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
