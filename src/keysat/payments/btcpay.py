"""BTCPay Server through its Greenfield API (payments.md 4): the client, the provider,
webhook verification and network detection."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import string
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from keysat.billing.pricing import SAT_CURRENCIES, parse_decimal, round_half_up, sats_to_btc_string
from keysat.clock import now
from keysat.outbound import UpstreamError, as_object, call_json, string_field
from keysat.payments.models import PaymentProvider
from keysat.payments.provider import (
    CreatedInvoice,
    InvoiceRequest,
    Money,
    Snapshot,
    SnapshotStatus,
)

WEBHOOK_EVENTS = ("InvoiceSettled", "InvoiceExpired", "InvoiceInvalid")
CONFIRMING_EVENTS = frozenset({"InvoiceSettled", "InvoicePaymentSettled", *WEBHOOK_EVENTS})
AUTHORIZE_PERMISSIONS = (
    "btcpay.store.canviewstoresettings",
    "btcpay.store.canmodifystoresettings",
    "btcpay.store.canviewinvoices",
    "btcpay.store.cancreateinvoice",
    "btcpay.store.canmodifyinvoices",
)
MIN_EXPIRATION_MINUTES = 15
SIGNATURE_PREFIX = "sha256="

_STATUS = {
    "settled": SnapshotStatus.SETTLED,
    "complete": SnapshotStatus.SETTLED,
    "expired": SnapshotStatus.EXPIRED,
    "invalid": SnapshotStatus.INVALID,
}
_BASE58 = frozenset("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")
_HEX = frozenset(string.hexdigits)


class BTCPayClient:
    """Every Greenfield call the server makes, with `Authorization: token <key>`."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"token {api_key}"}

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        body: Any = None,
        accept_statuses: tuple[int, ...] = (),
    ) -> Any:
        return await call_json(
            self._http,
            method,
            f"{self._base}{path}",
            what=f"BTCPay {what}",
            headers=self._headers,
            body=body,
            accept_statuses=accept_statuses,
        )

    async def create_invoice(self, store_id: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self._call(
            "POST", f"/api/v1/stores/{store_id}/invoices", "create-invoice", body
        )
        return as_object(answer, "BTCPay create-invoice")

    async def get_invoice(self, store_id: str, invoice_id: str) -> dict[str, Any]:
        path = f"/api/v1/stores/{store_id}/invoices/{quote(invoice_id, safe='')}"
        return as_object(await self._call("GET", path, "read-invoice"), "BTCPay read-invoice")

    async def list_stores(self) -> list[dict[str, Any]]:
        answer = await self._call("GET", "/api/v1/stores", "list-stores")
        if not isinstance(answer, list):
            raise UpstreamError("BTCPay list-stores: expected a JSON array")
        return [store for store in answer if isinstance(store, dict)]

    async def register_webhook(self, store_id: str, url: str, secret: str) -> dict[str, Any]:
        body = {
            "url": url,
            "enabled": True,
            "automaticRedelivery": True,
            "secret": secret,
            "authorizedEvents": {"everything": False, "specificEvents": list(WEBHOOK_EVENTS)},
        }
        answer = await self._call(
            "POST", f"/api/v1/stores/{store_id}/webhooks", "register-webhook", body
        )
        return as_object(answer, "BTCPay register-webhook")

    async def delete_webhook(self, store_id: str, webhook_id: str) -> None:
        path = f"/api/v1/stores/{store_id}/webhooks/{quote(webhook_id, safe='')}"
        await self._call("DELETE", path, "delete-webhook", accept_statuses=(404,))

    async def revoke_api_key(self) -> None:
        await self._call(
            "DELETE", "/api/v1/api-keys/current", "revoke-api-key", accept_statuses=(404,)
        )

    async def payment_methods(self, store_id: str) -> list[Any]:
        answer = await self._call(
            "GET", f"/api/v1/stores/{store_id}/payment-methods", "payment-methods"
        )
        if not isinstance(answer, list):
            raise UpstreamError("BTCPay payment-methods: expected a JSON array")
        return answer

    async def receive_address(self, store_id: str, payment_method_id: str) -> str:
        path = (
            f"/api/v1/stores/{store_id}/payment-methods/"
            f"{quote(payment_method_id, safe='')}/wallet/address"
        )
        answer = as_object(
            await self._call("GET", path, "receive-address"), "BTCPay receive-address"
        )
        return string_field(answer, "address", "BTCPay receive-address")

    async def pay_lightning_invoice(self, store_id: str, bolt11: str) -> str | None:
        path = f"/api/v1/stores/{store_id}/lightning/BTC/invoices/pay"
        answer = await self._call("POST", path, "pay-lightning-invoice", {"BOLT11": bolt11})
        payment_hash = answer.get("paymentHash") if isinstance(answer, dict) else None
        return payment_hash if isinstance(payment_hash, str) and payment_hash else None


def expiration_minutes(request: InvoiceRequest) -> int | None:
    """Whole minutes to the requested expiry, rounded up; None below BTCPay's useful floor."""
    if request.expires_at is None:
        return None
    minutes = math.ceil((request.expires_at - now()).total_seconds() / 60)
    return minutes if minutes >= MIN_EXPIRATION_MINUTES else None


def rewrite_checkout_link(link: str, public_base: str | None) -> str:
    """Buyers may reach BTCPay at another address than we do: swap scheme, host and port."""
    if not public_base:
        return link
    try:
        original = urlsplit(link)
        public = urlsplit(public_base)
    except ValueError:
        return link
    if not original.scheme or not original.netloc:
        return link
    return urlunsplit(
        (public.scheme, public.netloc, original.path, original.query, original.fragment)
    )


def snapshot_from_invoice(data: dict[str, Any]) -> Snapshot:
    raw_status = data.get("status")
    status = (
        _STATUS.get(raw_status.lower(), SnapshotStatus.PENDING)
        if isinstance(raw_status, str)
        else SnapshotStatus.PENDING
    )
    metadata = data.get("metadata")
    order_id = metadata.get("orderId") if isinstance(metadata, dict) else None
    return Snapshot(
        status=status,
        amount=_amount(data.get("amount"), data.get("currency")),
        external_order_id=order_id if isinstance(order_id, str) else None,
    )


def _amount(amount: Any, currency: Any) -> Money | None:
    if (
        not isinstance(amount, str | int)
        or isinstance(amount, bool)
        or not isinstance(currency, str)
    ):
        return None
    value = parse_decimal(str(amount))
    if value is None:
        return None
    code = currency.upper()
    if code == "BTC":
        sats = round_half_up(value * 100_000_000)
    elif code == "SATS":
        sats = round_half_up(value)
    else:
        # A fiat amount is reported as the provider gave it, in smallest units.
        cents = round_half_up(value * 100)
        return Money(currency=code, amount=cents) if cents > 0 else None
    return Money(currency="SAT", amount=sats) if sats > 0 else None


class BTCPayProvider:
    kind = "btcpay"

    def __init__(
        self, row: PaymentProvider, http: httpx.AsyncClient, checkout_base: str | None
    ) -> None:
        if not row.store_id:
            raise UpstreamError("BTCPay provider has no store")
        self.provider_id: str | None = row.id
        self.store_id = row.store_id
        self.client = BTCPayClient(http, row.base_url, row.api_key)
        self._checkout_base = checkout_base

    async def create_invoice(self, request: InvoiceRequest) -> CreatedInvoice:
        if request.amount.currency not in SAT_CURRENCIES:
            raise UpstreamError(f"BTCPay invoices in sats only, not {request.amount.currency}")
        metadata = dict(request.metadata)
        metadata.setdefault("orderId", request.external_order_id)
        metadata.setdefault("source", "keysat")
        checkout: dict[str, Any] = {
            "redirectURL": request.redirect_url,
            "redirectAutomatically": True,
        }
        minutes = expiration_minutes(request)
        if minutes is not None:
            checkout["expirationMinutes"] = minutes
        body = {
            "amount": sats_to_btc_string(request.amount.amount),
            "currency": "BTC",
            "metadata": metadata,
            "checkout": checkout,
        }
        answer = await self.client.create_invoice(self.store_id, body)
        invoice_id = string_field(answer, "id", "BTCPay create-invoice")
        link = string_field(answer, "checkoutLink", "BTCPay create-invoice")
        return CreatedInvoice(
            provider_invoice_id=invoice_id,
            checkout_url=rewrite_checkout_link(link, self._checkout_base),
        )

    async def get_invoice_status(self, provider_invoice_id: str) -> Snapshot:
        return snapshot_from_invoice(
            await self.client.get_invoice(self.store_id, provider_invoice_id)
        )


# --- webhooks -----------------------------------------------------------------------------


def signature_valid(secret: str, raw_body: bytes, header: str | None) -> bool:
    """`BTCPay-Sig: sha256=<hex>` over the raw body, compared in constant time."""
    if header is None or not header.startswith(SIGNATURE_PREFIX):
        return False
    given = header[len(SIGNATURE_PREFIX) :].lower()
    if len(given) != 64 or not set(given) <= _HEX:
        return False
    expected = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


@dataclass(frozen=True)
class BTCPayEvent:
    type: str
    invoice_id: str
    store_id: str | None
    order_id: str | None
    delivery_id: str | None


def parse_event(raw_body: bytes) -> BTCPayEvent | None:
    """The fields we use from a verified body; None when it is not a usable event."""
    try:
        data = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    event_type, invoice_id = data.get("type"), data.get("invoiceId")
    if not isinstance(event_type, str) or not isinstance(invoice_id, str):
        return None
    metadata = data.get("metadata")
    order_id = metadata.get("orderId") if isinstance(metadata, dict) else None
    store_id, delivery_id = data.get("storeId"), data.get("deliveryId")
    return BTCPayEvent(
        type=event_type,
        invoice_id=invoice_id,
        store_id=store_id if isinstance(store_id, str) else None,
        order_id=order_id if isinstance(order_id, str) else None,
        delivery_id=delivery_id if isinstance(delivery_id, str) else None,
    )


# --- network detection ---------------------------------------------------------------------


def classify_address(address: str) -> str | None:
    """The network a receive address belongs to, or None when it cannot be told."""
    text = address.strip()
    lowered = text.lower()
    if lowered.startswith("bcrt1"):
        return "regtest"
    if lowered.startswith("tb1"):
        return "testnet"
    if lowered.startswith("bc1"):
        return "mainnet"
    if 26 <= len(text) <= 35 and set(text) <= _BASE58:
        if text[0] in "13":
            return "mainnet"
        if text[0] in "mn2":
            return "testnet"
    return None


async def detect_network(client: BTCPayClient, store_id: str) -> str:
    """`mainnet`, `testnet`, `regtest`, or `unknown` when any step fails (payments.md 4.7)."""
    try:
        methods = await client.payment_methods(store_id)
        chain_id = next(
            (
                method["paymentMethodId"]
                for method in methods
                if isinstance(method, dict)
                and isinstance(method.get("paymentMethodId"), str)
                and method["paymentMethodId"].upper() in ("BTC-CHAIN", "BTC")
            ),
            None,
        )
        if chain_id is None:
            return "unknown"
        return classify_address(await client.receive_address(store_id, chain_id)) or "unknown"
    except UpstreamError:
        return "unknown"


def is_test_network(network: str | None) -> bool:
    return network in ("testnet", "signet", "regtest")
