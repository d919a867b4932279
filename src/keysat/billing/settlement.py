"""The settlement pipeline (billing.md 4): one path from "the provider says" to the license.

Every entry point (provider webhooks, sandbox actions, the reconciler) hands this module an
invoice id; it reads the invoice's state from the provider that created it and applies it
in one transaction. Status only moves forward, and the conditional update of the invoice
row decides the single winner among concurrent callers in any number of processes, so
each side effect (license, events, audit rows) happens exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import SYSTEM
from keysat.billing.discounts import cancel_pending, redeem_for_invoice
from keysat.billing.models import Invoice
from keysat.catalog.models import Policy
from keysat.catalog.service import default_policy
from keysat.clock import now
from keysat.db import Database
from keysat.licensing.models import License
from keysat.licensing.service import issue_for_invoice
from keysat.operator.service import record_audit
from keysat.payments.provider import Snapshot, SnapshotStatus
from keysat.payments.service import Providers
from keysat.subscriptions.service import (
    create_subscription,
    renewal_not_paid,
    settle_renewal,
    settle_tier_change,
)

log = logging.getLogger(__name__)

_TARGET = {
    SnapshotStatus.SETTLED: "settled",
    SnapshotStatus.EXPIRED: "expired",
    SnapshotStatus.INVALID: "invalid",
}
# payments.md 2.2: money received wins; nothing ever leaves `settled`.
_ALLOWED = {
    ("pending", "settled"),
    ("pending", "expired"),
    ("pending", "invalid"),
    ("expired", "settled"),
    ("invalid", "settled"),
}


def transition_allowed(current: str, target: str) -> bool:
    return (current, target) in _ALLOWED


@dataclass(frozen=True)
class Outcome:
    status: str
    changed: bool


class Settlement:
    def __init__(self, db: Database, providers: Providers) -> None:
        self._db = db
        self._providers = providers
        # Best-effort work after a settlement commits (billing.md 4.8); never part of it.
        self.after_settled: list[Callable[[str], Awaitable[None]]] = []

    async def confirm(self, invoice_id: str) -> Outcome | None:
        """Read the invoice's provider and apply what it reports.

        None when the invoice or its provider is gone. Raises UpstreamError when the
        provider cannot be read: nothing changes and the reconciler tries again.
        """
        async with self._db.read() as session:
            invoice = await session.get(Invoice, invoice_id)
            if invoice is None:
                return None
            provider = await self._providers.for_invoice(session, invoice)
        if provider is None:
            return None
        snapshot = await provider.get_invoice_status(invoice.provider_invoice_id)
        outcome = await self.apply(invoice_id, snapshot)
        if outcome is not None and outcome.changed and outcome.status == "settled":
            for hook in self.after_settled:
                await hook(invoice_id)
        return outcome

    async def apply(self, invoice_id: str, snapshot: Snapshot) -> Outcome | None:
        target = _TARGET.get(snapshot.status)
        if snapshot.external_order_id is not None and snapshot.external_order_id != invoice_id:
            log.warning(
                "provider reports order %s for invoice %s; ignoring it",
                snapshot.external_order_id,
                invoice_id,
            )
            return None
        async with self._db.write() as session:
            invoice = (
                await session.execute(
                    sa.select(Invoice).where(Invoice.id == invoice_id).with_for_update()
                )
            ).scalar_one_or_none()
            if invoice is None:
                return None
            current = invoice.status
            if target is None or not transition_allowed(current, target):
                return Outcome(status=current, changed=False)
            at = now()
            won = await session.execute(
                sa.update(Invoice)
                .where(Invoice.id == invoice_id, Invoice.status == current)
                .values(
                    status=target,
                    updated_at=at,
                    settled_at=at if target == "settled" else Invoice.settled_at,
                )
                .execution_options(synchronize_session=False)
            )
            if not won.rowcount:  # type: ignore[attr-defined]
                return Outcome(status=current, changed=False)
            await session.refresh(invoice)
            if target == "settled":
                await self._settled(session, invoice, snapshot)
            else:
                await cancel_pending(session, invoice.id)
                if invoice.kind == "renewal":
                    await renewal_not_paid(session, invoice)
        return Outcome(status=target, changed=True)

    async def _settled(self, session: AsyncSession, invoice: Invoice, snapshot: Snapshot) -> None:
        _amount_tripwire(session, invoice, snapshot)
        if invoice.kind == "purchase":
            await issue_purchase(session, invoice)
        elif invoice.kind == "renewal":
            await settle_renewal(session, invoice)
        else:
            await settle_tier_change(session, invoice)


def _amount_tripwire(session: AsyncSession, invoice: Invoice, snapshot: Snapshot) -> None:
    """A provider amount in sats that differs from ours is recorded, never blocking."""
    amount = snapshot.amount
    if amount is None or amount.currency != "SAT" or amount.amount == invoice.amount_sats:
        return
    record_audit(
        session,
        SYSTEM,
        "invoice.amount_mismatch",
        "invoice",
        invoice.id,
        {
            "provider_invoice_id": invoice.provider_invoice_id,
            "expected_amount_sats": invoice.amount_sats,
            "provider_amount_sats": amount.amount,
        },
    )


async def issue_purchase(session: AsyncSession, invoice: Invoice) -> License | None:
    """billing.md 4.4: the one license a settled purchase buys, and its redemption."""
    existing = (
        await session.execute(sa.select(License).where(License.invoice_id == invoice.id))
    ).scalar_one_or_none()
    if existing is not None:
        return None
    policy = await _purchase_policy(session, invoice)
    row = issue_for_invoice(session, invoice, policy, sandbox=invoice.provider_kind == "sandbox")
    await session.flush()
    if policy is not None and policy.is_recurring and row.expires_at is not None:
        await create_subscription(session, row, policy, invoice, row.expires_at)
    await redeem_for_invoice(session, invoice, row.id)
    return row


async def _purchase_policy(session: AsyncSession, invoice: Invoice) -> Policy | None:
    """The invoice's policy if it still exists (the buyer paid: no active or archived
    check), else the product's default policy."""
    if invoice.policy_id is not None:
        policy = await session.get(Policy, invoice.policy_id)
        if policy is not None:
            return policy
    return await default_policy(session, invoice.product_id)
