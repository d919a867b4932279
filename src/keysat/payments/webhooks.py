"""Inbound provider webhooks (payments.md 2.4, 4.5, 5.5; public-api.md 13).

Every event is a hint: it names an invoice, and the invoice's state is read back from the
provider that created it before the settlement pipeline changes anything.
"""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa

from keysat.billing.models import Invoice
from keysat.billing.settlement import Settlement
from keysat.db import Database
from keysat.errors import not_found, unauthorized
from keysat.operator.service import default_profile
from keysat.outbound import UpstreamError
from keysat.payments.btcpay import CONFIRMING_EVENTS, parse_event, signature_valid
from keysat.payments.connect import provider_of_kind
from keysat.payments.models import PaymentProvider
from keysat.payments.service import no_provider_configured
from keysat.payments.zaprite import webhook_event_name, webhook_order_id
from keysat.wire import normalize_id

log = logging.getLogger(__name__)


async def webhook_provider(db: Database, kind: str, provider_id: str | None) -> PaymentProvider:
    """The row a webhook path names, or the default profile's provider on a legacy path."""
    async with db.read() as session:
        if provider_id is None:
            row = await provider_of_kind(session, (await default_profile(session)).id, kind)
            if row is None:
                raise no_provider_configured(f"no {kind} provider on the default merchant profile")
            return row
        canonical = normalize_id(provider_id)
        row = await session.get(PaymentProvider, canonical) if canonical else None
    if row is None or row.kind != kind:
        raise not_found(f"payment provider {provider_id}")
    return row


async def _confirm(settlement: Settlement, invoice_id: str) -> None:
    """Unreachable providers are left to the reconciler; the sender gets its 200."""
    try:
        await settlement.confirm(invoice_id)
    except UpstreamError as exc:
        log.warning("invoice %s not confirmed: %s; the reconciler will retry", invoice_id, exc)


async def handle_btcpay(
    db: Database, settlement: Settlement, provider_id: str | None, signature: str | None, raw: bytes
) -> None:
    row = await webhook_provider(db, "btcpay", provider_id)
    if not row.webhook_secret or not signature_valid(row.webhook_secret, raw, signature):
        raise unauthorized()
    event = parse_event(raw)
    if event is None:
        raise unauthorized()
    log.info(
        "BTCPay %s for invoice %s (delivery %s)", event.type, event.invoice_id, event.delivery_id
    )
    if event.store_id is not None and event.store_id != row.store_id:
        return
    if event.type not in CONFIRMING_EVENTS:
        return
    async with db.read() as session:
        invoice_id = (
            await session.execute(
                sa.select(Invoice.id).where(
                    Invoice.provider_invoice_id == event.invoice_id,
                    Invoice.payment_provider_id == row.id,
                )
            )
        ).scalar_one_or_none()
    if invoice_id is None or (event.order_id is not None and event.order_id != invoice_id):
        return
    await _confirm(settlement, invoice_id)


async def handle_zaprite(
    db: Database, settlement: Settlement, provider_id: str | None, raw: bytes
) -> None:
    row = await webhook_provider(db, "zaprite", provider_id)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise unauthorized() from None
    order_id = webhook_order_id(data)
    if order_id is None:
        raise unauthorized()
    log.info("Zaprite %s for order %s (unsigned: confirming)", webhook_event_name(data), order_id)
    matches = [Invoice.provider_invoice_id == order_id]
    if (canonical := normalize_id(order_id)) is not None:
        matches.append(Invoice.id == canonical)
    async with db.read() as session:
        invoice_id = (
            await session.execute(
                sa.select(Invoice.id).where(sa.or_(*matches), Invoice.payment_provider_id == row.id)
            )
        ).scalar_one_or_none()
    if invoice_id is not None:
        await _confirm(settlement, invoice_id)
