"""Background work of billing: the reconciler and the redemption reaper (billing.md 5, 2.6).

Each job is a `tick(now)` that does one pass and returns; the job runner schedules it and
takes its lease. Every side effect is itself a conditional update, so overlapping ticks in
several processes can never settle, issue or release anything twice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from keysat.billing.discounts import cancel_pending
from keysat.billing.models import DiscountRedemption, Invoice
from keysat.billing.settlement import Settlement
from keysat.db import Database
from keysat.jobs import Job
from keysat.outbound import UpstreamError

log = logging.getLogger(__name__)

RECONCILE_BATCH = 500
RECONCILE_CREATED_WINDOW = timedelta(hours=72)
RECONCILE_EXPIRY_WINDOW = timedelta(hours=24)
STALE_REDEMPTION = timedelta(minutes=30)


class Reconciler:
    """Polls providers for pending invoices whose webhooks may have been lost."""

    def __init__(self, db: Database, settlement: Settlement) -> None:
        self._db = db
        self._settlement = settlement

    async def tick(self, at: datetime) -> int:
        query = (
            sa.select(Invoice.id)
            .where(
                Invoice.status == "pending",
                sa.or_(
                    Invoice.created_at >= at - RECONCILE_CREATED_WINDOW,
                    Invoice.expires_at > at - RECONCILE_EXPIRY_WINDOW,
                ),
            )
            .order_by(Invoice.created_at, Invoice.id)
            .limit(RECONCILE_BATCH)
        )
        async with self._db.read() as session:
            invoice_ids = list((await session.execute(query)).scalars())
        changed = 0
        for invoice_id in invoice_ids:
            try:
                outcome = await self._settlement.confirm(invoice_id)
            except UpstreamError as exc:
                log.warning("reconcile: invoice %s not confirmed: %s", invoice_id, exc)
                continue
            except Exception:
                log.exception("reconcile: invoice %s failed", invoice_id)
                continue
            if outcome is not None and outcome.changed:
                changed += 1
        return changed


async def reap_redemptions(db: Database, at: datetime) -> int:
    """Give back the slots of abandoned checkouts (billing.md 2.6)."""
    query = (
        sa.select(DiscountRedemption.invoice_id)
        .join(Invoice, Invoice.id == DiscountRedemption.invoice_id)
        .where(
            DiscountRedemption.status == "pending",
            sa.or_(
                Invoice.status.in_(("expired", "invalid")),
                sa.and_(
                    Invoice.status == "pending",
                    DiscountRedemption.created_at <= at - STALE_REDEMPTION,
                ),
            ),
        )
    )
    async with db.read() as session:
        invoice_ids = list((await session.execute(query)).scalars())
    released = 0
    for invoice_id in invoice_ids:
        async with db.write() as session:
            released += await cancel_pending(session, invoice_id)
    return released


def billing_jobs(db: Database, settlement: Settlement) -> list[Job]:
    reconciler = Reconciler(db, settlement)

    async def reaper(at: datetime) -> int:
        return await reap_redemptions(db, at)

    return [
        Job("reconciler", timedelta(seconds=15), timedelta(seconds=60), reconciler.tick),
        Job("redemption_reaper", timedelta(minutes=5), timedelta(minutes=5), reaper),
    ]
