"""The built-in sandbox provider (payments.md 3): simulated payments, no money moves.

It behaves like a remote provider that happens to keep its invoices in our database: it
stores its invoice before ours exists, knows ours only as the external order id, and its
state is read back through `get_invoice_status` like any other provider's.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.billing.pricing import SAT_CURRENCIES
from keysat.clock import now
from keysat.db import Database
from keysat.errors import conflict
from keysat.outbound import UpstreamError
from keysat.payments.models import SandboxInvoice
from keysat.payments.provider import (
    CreatedInvoice,
    InvoiceRequest,
    Money,
    Snapshot,
    SnapshotStatus,
)

DEFAULT_LIFETIME = timedelta(minutes=60)
ACTIONS = ("pay", "expire", "invalidate")

_SNAPSHOT = {
    "settled": SnapshotStatus.SETTLED,
    "expired": SnapshotStatus.EXPIRED,
    "invalid": SnapshotStatus.INVALID,
}
# The sandbox invoice states each action may start from; reaching its own target again is
# a no-op, every other start is refused (payments.md 3.2, 3.3).
_ALLOWED_FROM = {
    "pay": ("new", "expired"),
    "expire": ("new",),
    "invalidate": ("new", "expired"),
}
_TARGET = {"pay": "settled", "expire": "expired", "invalidate": "invalid"}
_DONE = {"pay": "paid", "expire": "expired", "invalidate": "invalidated"}


def new_sandbox_id() -> str:
    return "sbx_" + secrets.token_hex(16)


def snapshot_of(row: SandboxInvoice) -> Snapshot:
    amount = Money(currency="SAT", amount=row.amount_value)
    if row.status == "new":
        status = SnapshotStatus.EXPIRED if now() >= row.expires_at else SnapshotStatus.PENDING
        return Snapshot(status=status, amount=amount)
    return Snapshot(status=_SNAPSHOT[row.status], amount=amount)


class SandboxProvider:
    kind = "sandbox"
    provider_id: str | None = None

    def __init__(self, db: Database, public_url: str) -> None:
        self._db = db
        self._public_url = public_url

    async def create_invoice(self, request: InvoiceRequest) -> CreatedInvoice:
        if request.amount.currency not in SAT_CURRENCIES:
            raise UpstreamError("the sandbox invoices in sats only")
        at = now()
        row = SandboxInvoice(
            id=new_sandbox_id(),
            external_order_id=request.external_order_id,
            amount_currency="SAT",
            amount_value=request.amount.amount,
            status="new",
            redirect_url=request.redirect_url,
            invoice_metadata=dict(request.metadata),
            buyer_email=request.buyer_email,
            expires_at=request.expires_at or at + DEFAULT_LIFETIME,
            created_at=at,
            updated_at=at,
        )
        async with self._db.write() as session:
            session.add(row)
        return CreatedInvoice(
            provider_invoice_id=row.id,
            checkout_url=f"{self._public_url}/sandbox/checkout/{row.id}",
        )

    async def get_invoice_status(self, provider_invoice_id: str) -> Snapshot:
        async with self._db.read() as session:
            row = await session.get(SandboxInvoice, provider_invoice_id)
        if row is None:
            raise UpstreamError(f"sandbox invoice {provider_invoice_id} does not exist")
        return snapshot_of(row)


async def get_sandbox_invoice(session: AsyncSession, sandbox_id: str) -> SandboxInvoice | None:
    return await session.get(SandboxInvoice, sandbox_id)


async def apply_action(
    session: AsyncSession, sandbox_id: str, action: str, amount_sats: int | None = None
) -> SandboxInvoice:
    """Move a sandbox invoice as its checkout button or admin call asks; 409 when refused."""
    row = (
        await session.execute(
            sa.select(SandboxInvoice).where(SandboxInvoice.id == sandbox_id).with_for_update()
        )
    ).scalar_one()
    target = _TARGET[action]
    if row.status == target:
        return row
    if row.status not in _ALLOWED_FROM[action]:
        raise conflict(f"this sandbox invoice is {row.status} and cannot be {_DONE[action]}")
    at = now()
    if amount_sats is not None:
        row.amount_value = amount_sats
    row.status = target
    row.settled_at = at if target == "settled" else row.settled_at
    row.updated_at = at
    return row
