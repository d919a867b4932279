"""Zaprite (payments.md 5): the client, the provider and the unsigned webhook's order id.

Zaprite does not sign webhooks, so a webhook only names an order; the order is always
read back from Zaprite before anything changes.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from keysat.billing.pricing import FIAT_CURRENCIES, SAT_CURRENCIES
from keysat.errors import ApiError
from keysat.outbound import UpstreamError, as_object, call_json, string_field
from keysat.payments.models import PaymentProvider
from keysat.payments.provider import CreatedInvoice, InvoiceRequest, Money, Snapshot, SnapshotStatus
from keysat.wire import parse_ts

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.zaprite.com"
PAID_STATUSES = frozenset({"PAID", "COMPLETE", "OVERPAID"})
WEBHOOK_EXPLAINER = (
    "Zaprite does not sign its webhooks, so anyone could post to this URL. Keysat treats "
    "every delivery as a hint: it reads the order back from the Zaprite API with your key "
    "and acts only on what Zaprite reports."
)

_STATUS = {
    **{status: SnapshotStatus.SETTLED for status in PAID_STATUSES},
    "PENDING": SnapshotStatus.PENDING,
    "PROCESSING": SnapshotStatus.PENDING,
    "UNDERPAID": SnapshotStatus.PENDING,
    "EXPIRED": SnapshotStatus.EXPIRED,
    "INVALID": SnapshotStatus.INVALID,
    "CANCELLED": SnapshotStatus.INVALID,
    "CANCELED": SnapshotStatus.INVALID,
    "REFUNDED": SnapshotStatus.REFUNDED,
}


class ZapriteClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}

    async def _call(self, method: str, path: str, what: str, body: Any = None) -> Any:
        return await call_json(
            self._http,
            method,
            f"{self._base}{path}",
            what=f"Zaprite {what}",
            headers=self._headers,
            body=body,
        )

    async def ping(self) -> None:
        await self._call("GET", "/v1/orders?limit=1", "key check")

    async def create_order(self, body: dict[str, Any]) -> dict[str, Any]:
        return as_object(await self._call("POST", "/v1/orders", "create-order", body), "Zaprite")

    async def get_order(self, order_id: str) -> dict[str, Any]:
        path = f"/v1/orders/{quote(order_id, safe='')}"
        return as_object(await self._call("GET", path, "read-order"), "Zaprite read-order")

    async def create_contact(self, email: str, legal_name: str) -> str:
        body = {"email": email, "legalName": legal_name}
        answer = as_object(await self._call("POST", "/v1/contacts", "create-contact", body), "")
        return string_field(answer, "id", "Zaprite create-contact")

    async def get_contact(self, contact_id: str) -> dict[str, Any]:
        path = f"/v1/contacts/{quote(contact_id, safe='')}"
        return as_object(await self._call("GET", path, "read-contact"), "Zaprite read-contact")

    async def charge(self, order_id: str, payment_profile_id: str) -> dict[str, Any]:
        body = {"orderId": order_id, "paymentProfileId": payment_profile_id}
        return as_object(await self._call("POST", "/v1/orders/charge", "charge", body), "Zaprite")


def order_currency(amount: Money) -> str:
    if amount.currency in SAT_CURRENCIES:
        return "BTC"
    if amount.currency in FIAT_CURRENCIES:
        return amount.currency
    raise UpstreamError(f"Zaprite cannot invoice in {amount.currency}")


def snapshot_from_order(order: dict[str, Any]) -> Snapshot:
    raw_status = order.get("status")
    status = _STATUS.get(raw_status.upper()) if isinstance(raw_status, str) else None
    if status is None:
        log.warning("Zaprite order has status %r; treating it as pending", raw_status)
        status = SnapshotStatus.PENDING
    external = order.get("externalUniqId")
    return Snapshot(
        status=status,
        amount=_amount(order.get("amount"), order.get("currency")),
        external_order_id=external if isinstance(external, str) else None,
    )


def _amount(amount: Any, currency: Any) -> Money | None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        return None
    if not isinstance(currency, str):
        return None
    code = currency.upper()
    return Money(currency="SAT" if code in ("BTC", "SAT") else code, amount=amount)


def contact_id_of(order: dict[str, Any]) -> str | None:
    contact = order.get("contact")
    if isinstance(contact, dict) and isinstance(contact.get("id"), str) and contact["id"]:
        return str(contact["id"])
    value = order.get("contactId")
    return value if isinstance(value, str) and value else None


def saved_profile_for(contact: dict[str, Any], external_order_id: str) -> dict[str, Any] | None:
    """The payment profile saved while paying our invoice, with its expiry parsed."""
    profiles = contact.get("paymentProfiles")
    for profile in profiles if isinstance(profiles, list) else []:
        if not isinstance(profile, dict) or not isinstance(profile.get("id"), str):
            continue
        source = profile.get("sourceOrder")
        if isinstance(source, dict) and source.get("externalUniqId") == external_order_id:
            expires_at: datetime | None = None
            if isinstance(profile.get("expiresAt"), str):
                try:
                    expires_at = parse_ts("expiresAt", profile["expiresAt"])
                except ApiError:
                    expires_at = None
            method = profile.get("method")
            return {
                "profile_id": profile["id"],
                "method": method if isinstance(method, str) else None,
                "expires_at": expires_at,
            }
    return None


class ZapriteProvider:
    kind = "zaprite"

    def __init__(self, row: PaymentProvider, http: httpx.AsyncClient) -> None:
        self.provider_id: str | None = row.id
        self.client = ZapriteClient(http, row.base_url, row.api_key)

    async def create_invoice(self, request: InvoiceRequest) -> CreatedInvoice:
        body: dict[str, Any] = {
            "amount": request.amount.amount,
            "currency": order_currency(request.amount),
            "externalUniqId": request.external_order_id,
            "redirectUrl": request.redirect_url,
            "label": f"Keysat order {request.external_order_id}",
            "metadata": dict(request.metadata),
        }
        if request.buyer_email:
            body["customerData"] = {"email": request.buyer_email}
        if request.allow_save_payment_profile:
            if request.buyer_email:
                # Zaprite refuses to save a card for an order without a contact.
                body["contactId"] = await self.client.create_contact(
                    request.buyer_email, request.buyer_email
                )
                body["allowSavePaymentProfile"] = True
            else:
                log.warning(
                    "order %s may not save a card: no buyer e-mail to create a contact with",
                    request.external_order_id,
                )
        order = await self.client.create_order(body)
        return CreatedInvoice(
            provider_invoice_id=string_field(order, "id", "Zaprite create-order"),
            checkout_url=string_field(order, "checkoutUrl", "Zaprite create-order"),
        )

    async def get_invoice_status(self, provider_invoice_id: str) -> Snapshot:
        return snapshot_from_order(await self.client.get_order(provider_invoice_id))


def webhook_order_id(data: Any) -> str | None:
    """The order a webhook names: the first string at data.id, data.object.id, orderId, id."""
    if not isinstance(data, dict):
        return None
    nested = data.get("data")
    candidates = [
        nested.get("id") if isinstance(nested, dict) else None,
        nested.get("object", {}).get("id")
        if isinstance(nested, dict) and isinstance(nested.get("object"), dict)
        else None,
        data.get("orderId"),
        data.get("id"),
    ]
    return next((item for item in candidates if isinstance(item, str) and item), None)


def webhook_event_name(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    for key in ("event", "eventType", "type", "name"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
    return None
