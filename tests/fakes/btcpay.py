"""A fake BTCPay Server speaking the Greenfield API calls Keysat makes (payments.md 4.2, 7.1).

`FakeBTCPay` serves a Starlette app on 127.0.0.1 in its own thread. It answers with BTCPay's
paths, field names, status strings and error shapes (`{"code", "message"}`, and
`[{"path", "message"}]` with status 422 for validation errors, as BTCPay's controllers do),
checks `Authorization: token <key>` against BTCPay's permission tree, and records every
request. Tests drive it through Python methods, or over HTTP under `/_fake/...` when the
code under test runs in another process.

Where BTCPay's controllers and its OpenAPI document disagree, the fake does what BTCPay does:

* validation errors are 422 `[{"path", "message"}]` (the document says 400 for some calls);
* `DELETE /api/v1/api-keys/current` and webhook deletes answer 200 with no body (the
  document declares an ApiKeyData body for the former);
* paying a Lightning invoice needs `btcpay.store.canuselightningnode` (the document says
  `cancreatelightninginvoice`, a child of it);
* the store-scoped invoice read and webhook delete are served, as are the store-less forms
  the document lists.

One choice follows Keysat's spec instead (payments.md 4.6): a receive address needs
`canviewstoresettings`; the document asks for `btcpay.store.canviewwallet`, and some BTCPay
2.x releases for `canmodifystoresettings`. Keysat's five permissions satisfy all three.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from html import escape
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from fakes.base import RecordedRequest, ThreadedServer

BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
STORE_ID_LENGTH = 44
SHORT_ID_LENGTH = 22
CONTROL_PREFIX = "/_fake"

CAN_VIEW_STORE_SETTINGS = "btcpay.store.canviewstoresettings"
CAN_MODIFY_STORE_SETTINGS = "btcpay.store.canmodifystoresettings"
CAN_VIEW_INVOICES = "btcpay.store.canviewinvoices"
CAN_CREATE_INVOICE = "btcpay.store.cancreateinvoice"
CAN_MODIFY_INVOICES = "btcpay.store.canmodifyinvoices"
CAN_MODIFY_WEBHOOKS = "btcpay.store.webhooks.canmodifywebhooks"
CAN_USE_LIGHTNING_NODE = "btcpay.store.canuselightningnode"
UNRESTRICTED = "unrestricted"

# What Keysat's connect flow asks for (payments.md 4.6), in that order.
KEYSAT_PERMISSIONS = (
    CAN_VIEW_STORE_SETTINGS,
    CAN_MODIFY_STORE_SETTINGS,
    CAN_VIEW_INVOICES,
    CAN_CREATE_INVOICE,
    CAN_MODIFY_INVOICES,
)

# BTCPay's policy tree (BTCPayServer.Client/Permissions.cs), limited to the store policies
# this fake checks: holding a policy grants its descendants too.
POLICY_CHILDREN: dict[str, tuple[str, ...]] = {
    CAN_MODIFY_STORE_SETTINGS: (
        "btcpay.store.canmanagepullpayments",
        CAN_MODIFY_INVOICES,
        CAN_VIEW_STORE_SETTINGS,
        CAN_MODIFY_WEBHOOKS,
        "btcpay.store.canmodifypaymentrequests",
        "btcpay.store.canmanagepayouts",
        CAN_USE_LIGHTNING_NODE,
    ),
    CAN_MODIFY_INVOICES: (
        CAN_VIEW_INVOICES,
        CAN_CREATE_INVOICE,
        "btcpay.store.cancreatelightninginvoice",
    ),
    CAN_VIEW_STORE_SETTINGS: (
        CAN_VIEW_INVOICES,
        "btcpay.store.canviewpaymentrequests",
        "btcpay.store.canviewreports",
        "btcpay.store.canviewpullpayments",
        "btcpay.store.canviewpayouts",
    ),
    CAN_USE_LIGHTNING_NODE: (
        "btcpay.store.canviewlightninginvoice",
        "btcpay.store.cancreatelightninginvoice",
    ),
}

INVOICE_STATUSES = ("New", "Processing", "Settled", "Expired", "Invalid")
PAID_STATUSES = ("Processing", "Settled")
DEFAULT_PAYMENT_METHODS: tuple[dict[str, Any], ...] = (
    {"enabled": True, "paymentMethodId": "BTC-CHAIN"},
    {"enabled": True, "paymentMethodId": "BTC-LN"},
)
# On-chain ids of BTCPay 2.x and 1.x; lightning ids likewise (payments.md 4.8).
ONCHAIN_METHOD_IDS = ("BTC-CHAIN", "BTC", "BTC-ONCHAIN")
LIGHTNING_METHOD_IDS = ("BTC-LN", "BTC-LIGHTNINGNETWORK", "BTC-LIGHTNINGLIKE")
DEFAULT_RECEIVE_ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
DEFAULT_EXPIRATION_MINUTES = 15
DEFAULT_MONITORING_MINUTES = 1440
MIN_EXPIRATION_SECONDS = 30
DELIVERY_TIMEOUT_SECONDS = 30.0


def _random_id(length: int) -> str:
    return "".join(secrets.choice(BASE58_ALPHABET) for _ in range(length))


def _new_api_key() -> str:
    # BTCPay's API keys are 20 random bytes in hex.
    return secrets.token_hex(20)


def _policy_contains(policy: str, wanted: str) -> bool:
    if policy in (UNRESTRICTED, wanted):
        return True
    return any(_policy_contains(child, wanted) for child in POLICY_CHILDREN.get(policy, ()))


def _grants(permissions: Iterable[str], wanted: str, store_id: str) -> bool:
    """Whether a key's permissions ("<policy>" or "<policy>:<storeId>") allow `wanted` on a
    store, the way BTCPay's Permission.Contains decides it."""
    for permission in permissions:
        policy, _, scope = permission.partition(":")
        if _policy_contains(policy.strip().lower(), wanted) and scope in ("", store_id):
            return True
    return False


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, **extra}, status_code=status)


def _validation_error(*errors: tuple[str, str]) -> JSONResponse:
    return JSONResponse([{"path": p, "message": m} for p, m in errors], status_code=422)


def _unauthenticated() -> JSONResponse:
    return _error(401, "unauthenticated", "Authentication is required for accessing this endpoint")


def _missing_permission(policy: str) -> JSONResponse:
    return _error(
        403,
        "missing-permission",
        f'Insufficient API Permissions. Please use an API key with permission "{policy}". '
        "You can create an API key in your account's settings / Api Keys.",
        missingPermission=policy,
    )


def _decimal_string(value: Decimal) -> str:
    return format(value, "f")


def _presented_key(request: Request) -> str:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "token" else ""


def _is_absolute_url(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme and parts.netloc)


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


@dataclass
class FakeInvoice:
    """One invoice as the fake holds it; `checkout` is the object BTCPay answers with."""

    id: str
    store_id: str
    amount: str
    currency: str
    status: str
    metadata: dict[str, Any]
    checkout: dict[str, Any]
    created_time: int
    expiration_time: int
    monitoring_expiration: int
    type: str = "Standard"


@dataclass
class FakeWebhook:
    id: str
    store_id: str
    url: str
    secret: str
    enabled: bool
    automatic_redelivery: bool
    authorized_events: dict[str, Any]


@dataclass
class _FailureRule:
    method: str
    path: re.Pattern[str]
    remaining: int
    status: int
    hang_seconds: float | None


@dataclass
class _Delivery:
    url: str
    body: bytes
    headers: dict[str, str]


class FakeBTCPay:
    """A BTCPay Server with one user owning `store_id`, and `api_key` holding Keysat's five
    permissions on that store. `url` is known from construction; `start()` serves it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.user_id = str(uuid.uuid4())
        self.store_id = _random_id(STORE_ID_LENGTH)
        self.api_key = _new_api_key()
        self.requests: list[RecordedRequest] = []
        self._stores: dict[str, str] = {self.store_id: "Keysat test store"}
        self._keys: dict[str, list[str]] = {
            self.api_key: [f"{p}:{self.store_id}" for p in KEYSAT_PERMISSIONS]
        }
        self._invoices: dict[str, FakeInvoice] = {}
        self._webhooks: dict[str, FakeWebhook] = {}
        self._lightning_payments: list[str] = []
        self._payment_methods: list[dict[str, Any]] = [dict(m) for m in DEFAULT_PAYMENT_METHODS]
        self._receive_address = DEFAULT_RECEIVE_ADDRESS
        self._failures: list[_FailureRule] = []
        self.app = Starlette(routes=self._api_routes() + self._control_routes())
        self._server = ThreadedServer(self)
        self.url = self._server.url

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeBTCPay:
        self._server.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.stop()

    def __enter__(self) -> FakeBTCPay:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state for assertions --------------------------------------------------------------

    @property
    def invoices(self) -> dict[str, FakeInvoice]:
        with self._lock:
            return {
                i: replace(inv, metadata=copy.deepcopy(inv.metadata))
                for i, inv in self._invoices.items()
            }

    @property
    def webhooks(self) -> list[FakeWebhook]:
        """Registered webhooks, oldest first."""
        with self._lock:
            return [replace(w) for w in self._webhooks.values()]

    @property
    def lightning_payments(self) -> list[str]:
        """BOLT11 invoices paid through the store's Lightning node, in order."""
        with self._lock:
            return list(self._lightning_payments)

    @property
    def api_keys(self) -> dict[str, list[str]]:
        """Live (not revoked) API keys and their permissions."""
        with self._lock:
            return {k: list(p) for k, p in self._keys.items()}

    @property
    def stores(self) -> dict[str, str]:
        with self._lock:
            return dict(self._stores)

    def api_requests(
        self, method: str | None = None, path_regex: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests other than control calls, optionally filtered by method and by a
        regex searched in the path."""
        return [
            r
            for r in self._recorded()
            if not r.path.startswith(CONTROL_PREFIX)
            and (method is None or r.method == method.upper())
            and (path_regex is None or re.search(path_regex, r.path))
        ]

    def _recorded(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    # -- controls --------------------------------------------------------------------------

    def set_invoice_status(self, invoice_id: str, status: str) -> None:
        if status not in INVOICE_STATUSES:
            raise ValueError(f"status must be one of {INVOICE_STATUSES}, not {status!r}")
        with self._lock:
            self._invoices[invoice_id].status = status

    def set_invoice_amount(self, invoice_id: str, amount: str, currency: str = "BTC") -> None:
        """Set the amount BTCPay reports, verbatim (tests may want an unparseable one)."""
        with self._lock:
            invoice = self._invoices[invoice_id]
            invoice.amount = amount
            invoice.currency = currency

    def fail_next(
        self,
        method: str,
        path_regex: str,
        count: int = 1,
        status: int = 500,
        hang_seconds: float | None = None,
    ) -> None:
        """The next `count` API calls with this method and a path in which `path_regex` is
        found answer `status` with an error body, after `hang_seconds` if given (a hang ends
        early when the fake stops). Rules are tried in the order they were added."""
        if count < 1:
            raise ValueError("count must be at least 1")
        rule = _FailureRule(method.upper(), re.compile(path_regex), count, status, hang_seconds)
        with self._lock:
            self._failures.append(rule)

    def set_receive_address(self, address: str) -> None:
        with self._lock:
            self._receive_address = address

    def set_payment_methods(self, methods: list[dict[str, Any]]) -> None:
        """Replace the payment methods every store lists (raw GenericPaymentMethodData
        objects, e.g. {"paymentMethodId": "BTC-CHAIN", "enabled": True})."""
        with self._lock:
            self._payment_methods = copy.deepcopy(methods)

    def add_store(self, store_id: str, name: str) -> None:
        with self._lock:
            self._stores[store_id] = name

    def add_api_key(self, key: str, permissions: list[str]) -> None:
        """Register a key; permissions are "<policy>:<storeId>" or "<policy>" (every store)."""
        with self._lock:
            self._keys[key] = list(permissions)

    def authorize(
        self, permissions: Iterable[str], store_ids: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """What BTCPay's consent page does when the user approves: mint a key and return the
        form fields it POSTs to the redirect URL (post them with `data=`).

        Store policies are granted once per store as "<policy>:<storeId>". `store_ids`
        defaults to the default store; an empty list grants them unscoped (all stores)."""
        stores = [self.store_id] if store_ids is None else list(store_ids)
        granted: list[str] = []
        with self._lock:
            unknown = [s for s in stores if s not in self._stores]
            if unknown:
                raise ValueError(f"unknown stores: {unknown}")
            for policy in permissions:
                if policy.startswith("btcpay.store.") and stores:
                    granted.extend(f"{policy}:{s}" for s in stores)
                else:
                    granted.append(policy)
            key = _new_api_key()
            self._keys[key] = granted
        return {"apiKey": key, "userId": self.user_id, "permissions[]": granted}

    # -- webhook delivery ------------------------------------------------------------------

    async def deliver_webhook(
        self,
        invoice_id: str,
        event_type: str = "InvoiceSettled",
        *,
        webhook_id: str | None = None,
        bad_signature: bool = False,
        omit_signature: bool = False,
        client: httpx.AsyncClient | None = None,
        body_overrides: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """POST the event BTCPay would send for this invoice to a registered webhook (the
        given one, else the newest on the invoice's store), signed with its secret.

        Sent whatever the webhook's `enabled`/`authorizedEvents` say, so tests can also
        deliver types the receiver did not subscribe to. `body_overrides` replaces top-level
        fields after the body is built. With `client` (e.g. bound to an ASGI app) the POST
        goes through it to the full registered URL; otherwise over real HTTP."""
        delivery = self._prepare_delivery(
            invoice_id, event_type, webhook_id, bad_signature, omit_signature, body_overrides
        )
        if client is not None:
            return await client.post(delivery.url, content=delivery.body, headers=delivery.headers)
        async with httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_SECONDS) as fresh:
            return await fresh.post(delivery.url, content=delivery.body, headers=delivery.headers)

    def deliver_webhook_sync(
        self,
        invoice_id: str,
        event_type: str = "InvoiceSettled",
        *,
        webhook_id: str | None = None,
        bad_signature: bool = False,
        omit_signature: bool = False,
        client: httpx.Client | None = None,
        body_overrides: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """`deliver_webhook` for synchronous tests (`client` may be a Starlette TestClient)."""
        delivery = self._prepare_delivery(
            invoice_id, event_type, webhook_id, bad_signature, omit_signature, body_overrides
        )
        if client is not None:
            return client.post(delivery.url, content=delivery.body, headers=delivery.headers)
        with httpx.Client(timeout=DELIVERY_TIMEOUT_SECONDS) as fresh:
            return fresh.post(delivery.url, content=delivery.body, headers=delivery.headers)

    def _prepare_delivery(
        self,
        invoice_id: str,
        event_type: str,
        webhook_id: str | None,
        bad_signature: bool,
        omit_signature: bool,
        body_overrides: dict[str, Any] | None,
    ) -> _Delivery:
        with self._lock:
            invoice = self._invoices[invoice_id]
            if webhook_id is not None:
                webhook = self._webhooks[webhook_id]
            else:
                candidates = [w for w in self._webhooks.values() if w.store_id == invoice.store_id]
                if not candidates:
                    raise LookupError(f"no webhook registered on store {invoice.store_id}")
                webhook = candidates[-1]
            body = self._event_body(invoice, webhook, event_type)
        body.update(body_overrides or {})
        # BTCPay serializes once, indented and without escaping non-ASCII, and signs exactly
        # those bytes: a receiver that re-serializes before checking will fail here too.
        raw = json.dumps(body, indent=2, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if not omit_signature:
            key = webhook.secret + ("-not-the-secret" if bad_signature else "")
            digest = hmac.new(key.encode("utf-8"), raw, hashlib.sha256).hexdigest()
            headers["BTCPay-Sig"] = f"sha256={digest}"
        return _Delivery(webhook.url, raw, headers)

    def _event_body(
        self, invoice: FakeInvoice, webhook: FakeWebhook, event_type: str
    ) -> dict[str, Any]:
        now = int(time.time())
        delivery_id = _random_id(SHORT_ID_LENGTH)
        body: dict[str, Any] = {
            "deliveryId": delivery_id,
            "webhookId": webhook.id,
            "originalDeliveryId": delivery_id,
            "isRedelivery": False,
            "type": event_type,
            "timestamp": now,
            "storeId": invoice.store_id,
            "invoiceId": invoice.id,
            "metadata": copy.deepcopy(invoice.metadata),
        }
        if event_type == "InvoiceSettled":
            body |= {"manuallyMarked": False, "overPaid": False}
        elif event_type == "InvoiceInvalid":
            body |= {"manuallyMarked": False}
        elif event_type == "InvoiceExpired":
            body |= {"partiallyPaid": False}
        elif event_type == "InvoiceProcessing":
            body |= {"overPaid": False}
        elif event_type in ("InvoiceReceivedPayment", "InvoicePaymentSettled"):
            settled = event_type == "InvoicePaymentSettled"
            body |= {
                "afterExpiration": False,
                "paymentMethodId": "BTC-CHAIN",
                "payment": {
                    "id": f"{secrets.token_hex(32)}-0",
                    "receivedDate": now,
                    "value": invoice.amount,
                    "fee": "0.0",
                    "status": "Settled" if settled else "Processing",
                    "destination": self._receive_address,
                },
            }
        return body

    # -- request plumbing ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The fake as an ASGI app: the Starlette app, with every exchange recorded and
        injected failures applied."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        recorded = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"].decode("latin-1"),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            body=body,
        )
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                recorded.status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    recorded.response_body = b"".join(chunks)
                    # Recorded before the last byte leaves, so a test that got its answer
                    # always finds the request in `requests`.
                    with self._lock:
                        self.requests.append(recorded)
            await send(message)

        rule = self._take_failure(recorded)
        if rule is None:
            await self.app(scope, replay, capture)
            return
        recorded.extra["injected"] = True
        if rule.hang_seconds:
            await self._hang(rule.hang_seconds)
        response = _error(rule.status, "injected-failure", "failure injected by the test")
        await response(scope, replay, capture)

    def _take_failure(self, recorded: RecordedRequest) -> _FailureRule | None:
        if recorded.path.startswith(CONTROL_PREFIX):
            return None
        with self._lock:
            for rule in self._failures:
                if rule.method == recorded.method and rule.path.search(recorded.path):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._failures.remove(rule)
                    return rule
        return None

    async def _hang(self, seconds: float) -> None:
        # A threading.Event, because stop() is called from the test's thread.
        await asyncio.to_thread(self._stopping.wait, seconds)

    def _deny(self, request: Request, policy: str | None, store_id: str | None) -> Response | None:
        """401 for a missing or unknown key; 403 when `policy` is not granted on `store_id`
        (an unknown store is one the key cannot see, as in BTCPay); None when allowed."""
        with self._lock:
            permissions = self._keys.get(_presented_key(request))
            if permissions is None:
                return _unauthenticated()
            if policy is None:
                return None
            if store_id not in self._stores or not _grants(permissions, policy, store_id):
                return _missing_permission(policy)
        return None

    # -- Greenfield API --------------------------------------------------------------------

    def _api_routes(self) -> list[Route]:
        stores = "/api/v1/stores/{store_id}"
        return [
            Route("/api/v1/stores", self._list_stores, methods=["GET"]),
            Route(f"{stores}/invoices", self._create_invoice, methods=["POST"]),
            Route(f"{stores}/invoices/{{invoice_id}}", self._get_store_invoice, methods=["GET"]),
            Route("/api/v1/invoices/{invoice_id}", self._get_invoice, methods=["GET"]),
            Route(f"{stores}/webhooks", self._create_webhook, methods=["POST"]),
            Route(
                f"{stores}/webhooks/{{webhook_id}}", self._delete_store_webhook, methods=["DELETE"]
            ),
            Route("/api/v1/webhooks/{webhook_id}", self._delete_webhook, methods=["DELETE"]),
            Route("/api/v1/api-keys/current", self._revoke_current_key, methods=["DELETE"]),
            Route(f"{stores}/payment-methods", self._payment_methods_list, methods=["GET"]),
            Route(
                f"{stores}/payment-methods/{{payment_method_id}}/wallet/address",
                self._receive_address_for,
                methods=["GET"],
            ),
            Route(
                f"{stores}/lightning/{{crypto_code}}/invoices/pay",
                self._pay_lightning_invoice,
                methods=["POST"],
            ),
            Route("/i/{invoice_id}", self._checkout_page, methods=["GET"]),
        ]

    async def _list_stores(self, request: Request) -> Response:
        denied = self._deny(request, None, None)
        if denied is not None:
            return denied
        with self._lock:
            permissions = self._keys.get(_presented_key(request), [])
            visible = [
                (store_id, name)
                for store_id, name in self._stores.items()
                if _grants(permissions, CAN_VIEW_STORE_SETTINGS, store_id)
            ]
        if not visible:
            return _missing_permission(CAN_VIEW_STORE_SETTINGS)
        return JSONResponse([_store_json(store_id, name) for store_id, name in visible])

    async def _create_invoice(self, request: Request) -> Response:
        store_id = request.path_params["store_id"]
        denied = self._deny(request, CAN_CREATE_INVOICE, store_id)
        if denied is not None:
            return denied
        body = await _json_object(request)
        if body is None:
            return _validation_error(("", "The request body must be a JSON object"))
        parsed = self._parse_invoice_request(body)
        if isinstance(parsed, Response):
            return parsed
        amount, currency, metadata, checkout = parsed
        now = int(time.time())
        expiration = now + round(checkout["expirationMinutes"] * 60)
        invoice = FakeInvoice(
            id=_random_id(SHORT_ID_LENGTH),
            store_id=store_id,
            amount=_decimal_string(amount) if amount is not None else "0",
            currency=currency,
            status="New",
            metadata=metadata,
            checkout=checkout,
            created_time=now,
            expiration_time=expiration,
            monitoring_expiration=expiration + round(checkout["monitoringMinutes"] * 60),
            type="Standard" if amount is not None else "TopUp",
        )
        with self._lock:
            self._invoices[invoice.id] = invoice
            answer = _invoice_json(invoice, _base_url(request))
        return JSONResponse(answer)

    def _parse_invoice_request(
        self, body: dict[str, Any]
    ) -> tuple[Decimal | None, str, dict[str, Any], dict[str, Any]] | Response:
        errors: list[tuple[str, str]] = []
        amount: Decimal | None = None
        raw_amount = body.get("amount")
        if raw_amount is not None:
            try:
                if isinstance(raw_amount, bool) or not isinstance(raw_amount, str | int | float):
                    raise InvalidOperation
                amount = Decimal(str(raw_amount))
                if not amount.is_finite():
                    raise InvalidOperation
            except InvalidOperation:
                errors.append(("amount", "The amount should be a decimal number."))
            else:
                if amount < 0:
                    errors.append(("amount", "The amount should be 0 or more."))
        currency = body.get("currency") or "USD"
        if not isinstance(currency, str):
            errors.append(("currency", "The currency should be a string."))
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            errors.append(("metadata", "The metadata should be a JSON object."))
        requested = body.get("checkout") or {}
        if not isinstance(requested, dict):
            return _validation_error(*errors, ("checkout", "checkout should be a JSON object."))
        expiration = requested.get("expirationMinutes")
        expiration = DEFAULT_EXPIRATION_MINUTES if expiration is None else expiration
        monitoring = requested.get("monitoringMinutes")
        monitoring = DEFAULT_MONITORING_MINUTES if monitoring is None else monitoring
        for name, value in (("expirationMinutes", expiration), ("monitoringMinutes", monitoring)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                errors.append((f"checkout.{name}", f"{name} should be a number."))
        if not errors and expiration * 60 < MIN_EXPIRATION_SECONDS:
            errors.append(
                ("checkout.expirationMinutes", "Expiration time must be at least 30 seconds")
            )
        if errors:
            return _validation_error(*errors)
        with self._lock:
            methods = [m["paymentMethodId"] for m in self._payment_methods if m.get("enabled")]
        checkout = {
            "speedPolicy": requested.get("speedPolicy") or "MediumSpeed",
            "paymentMethods": requested.get("paymentMethods") or methods,
            "defaultPaymentMethod": requested.get("defaultPaymentMethod"),
            "expirationMinutes": expiration,
            "monitoringMinutes": monitoring,
            "paymentTolerance": requested.get("paymentTolerance") or 0.0,
            "redirectURL": requested.get("redirectURL"),
            "redirectAutomatically": bool(requested.get("redirectAutomatically", False)),
            "defaultLanguage": requested.get("defaultLanguage"),
        }
        return amount, currency.upper(), copy.deepcopy(metadata), checkout

    async def _get_store_invoice(self, request: Request) -> Response:
        return self._read_invoice(
            request, request.path_params["store_id"], request.path_params["invoice_id"]
        )

    async def _get_invoice(self, request: Request) -> Response:
        """The store-less form: BTCPay resolves the store from the invoice."""
        invoice_id = request.path_params["invoice_id"]
        denied = self._deny(request, None, None)
        if denied is not None:
            return denied
        with self._lock:
            invoice = self._invoices.get(invoice_id)
        if invoice is None:
            return _invoice_not_found()
        return self._read_invoice(request, invoice.store_id, invoice_id)

    def _read_invoice(self, request: Request, store_id: str, invoice_id: str) -> Response:
        denied = self._deny(request, CAN_VIEW_INVOICES, store_id)
        if denied is not None:
            return denied
        with self._lock:
            invoice = self._invoices.get(invoice_id)
            if invoice is None or invoice.store_id != store_id:
                return _invoice_not_found()
            answer = _invoice_json(invoice, _base_url(request))
        return JSONResponse(answer)

    async def _create_webhook(self, request: Request) -> Response:
        store_id = request.path_params["store_id"]
        denied = self._deny(request, CAN_MODIFY_WEBHOOKS, store_id)
        if denied is not None:
            return denied
        body = await _json_object(request)
        if body is None:
            return _validation_error(("", "The request body must be a JSON object"))
        url = body.get("url")
        if not isinstance(url, str) or not _is_absolute_url(url):
            return _validation_error(("url", "Invalid Url"))
        events = body.get("authorizedEvents") or {}
        webhook = FakeWebhook(
            id=_random_id(SHORT_ID_LENGTH),
            store_id=store_id,
            url=url,
            # BTCPay generates a secret when none (or an empty one) is given.
            secret=body.get("secret") or _random_id(SHORT_ID_LENGTH),
            enabled=bool(body.get("enabled", True)),
            automatic_redelivery=bool(body.get("automaticRedelivery", True)),
            authorized_events={
                "everything": bool(events.get("everything", True)),
                "specificEvents": list(events.get("specificEvents") or []),
            },
        )
        with self._lock:
            self._webhooks[webhook.id] = webhook
        return JSONResponse(_webhook_json(webhook))

    async def _delete_store_webhook(self, request: Request) -> Response:
        return self._remove_webhook(
            request, request.path_params["store_id"], request.path_params["webhook_id"]
        )

    async def _delete_webhook(self, request: Request) -> Response:
        """The store-less form: BTCPay resolves the store from the webhook."""
        webhook_id = request.path_params["webhook_id"]
        denied = self._deny(request, None, None)
        if denied is not None:
            return denied
        with self._lock:
            webhook = self._webhooks.get(webhook_id)
        if webhook is None:
            return _webhook_not_found()
        return self._remove_webhook(request, webhook.store_id, webhook_id)

    def _remove_webhook(self, request: Request, store_id: str, webhook_id: str) -> Response:
        denied = self._deny(request, CAN_MODIFY_WEBHOOKS, store_id)
        if denied is not None:
            return denied
        with self._lock:
            webhook = self._webhooks.get(webhook_id)
            if webhook is None or webhook.store_id != store_id:
                return _webhook_not_found()
            del self._webhooks[webhook_id]
        # BTCPay answers Ok() with no body.
        return Response(status_code=200)

    async def _revoke_current_key(self, request: Request) -> Response:
        denied = self._deny(request, None, None)
        if denied is not None:
            return denied
        with self._lock:
            self._keys.pop(_presented_key(request), None)
        # BTCPay answers Ok() with no body, though its document declares ApiKeyData.
        return Response(status_code=200)

    async def _payment_methods_list(self, request: Request) -> Response:
        denied = self._deny(request, CAN_VIEW_STORE_SETTINGS, request.path_params["store_id"])
        if denied is not None:
            return denied
        only_enabled = request.query_params.get("onlyEnabled", "").lower()
        with self._lock:
            methods = copy.deepcopy(self._payment_methods)
        if only_enabled in ("true", "false"):
            methods = [m for m in methods if bool(m.get("enabled")) == (only_enabled == "true")]
        return JSONResponse(methods)

    async def _receive_address_for(self, request: Request) -> Response:
        denied = self._deny(request, CAN_VIEW_STORE_SETTINGS, request.path_params["store_id"])
        if denied is not None:
            return denied
        wanted = request.path_params["payment_method_id"].upper()
        with self._lock:
            configured = {str(m.get("paymentMethodId", "")).upper() for m in self._payment_methods}
            address = self._receive_address
        if wanted not in ONCHAIN_METHOD_IDS or wanted not in configured:
            return _error(404, "payment-method-not-found", "The payment method was not found")
        return JSONResponse(
            {"address": address, "keyPath": "0/0", "paymentLink": f"bitcoin:{address}"}
        )

    async def _pay_lightning_invoice(self, request: Request) -> Response:
        # BTCPay's controller requires canuselightningnode (the document says
        # cancreatelightninginvoice, which that policy includes).
        denied = self._deny(request, CAN_USE_LIGHTNING_NODE, request.path_params["store_id"])
        if denied is not None:
            return denied
        if request.path_params["crypto_code"].upper() != "BTC":
            return _error(404, "unknown-cryptocode", "This crypto code isn't set up in this server")
        with self._lock:
            configured = {str(m.get("paymentMethodId", "")).upper() for m in self._payment_methods}
        if not configured & set(LIGHTNING_METHOD_IDS):
            return _error(
                404, "lightning-not-configured", "The lightning node is not set up for this store"
            )
        body = await _json_object(request)
        bolt11 = body.get("BOLT11") if body is not None else None
        if not isinstance(bolt11, str) or not bolt11.lower().startswith("ln"):
            return _validation_error(("BOLT11", "The BOLT11 invoice was invalid."))
        preimage = secrets.token_bytes(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        with self._lock:
            self._lightning_payments.append(bolt11)
        return JSONResponse(
            {
                "id": payment_hash,
                "status": "Complete",
                "BOLT11": bolt11,
                "paymentHash": payment_hash,
                "preimage": preimage.hex(),
                "createdAt": int(time.time()),
                "feeAmount": "0",
            }
        )

    async def _checkout_page(self, request: Request) -> Response:
        with self._lock:
            invoice = self._invoices.get(request.path_params["invoice_id"])
            if invoice is None:
                return HTMLResponse("<h1>Invoice not found</h1>", status_code=404)
            text = f"{invoice.id}: {invoice.amount} {invoice.currency}, {invoice.status}"
        return HTMLResponse(f"<h1>Fake BTCPay checkout</h1><p>{escape(text)}</p>")

    # -- HTTP controls ---------------------------------------------------------------------

    def _control_routes(self) -> list[Route]:
        c = CONTROL_PREFIX
        return [
            Route(f"{c}/state", self._control(lambda _b, _p: self._state()), methods=["GET"]),
            Route(
                f"{c}/requests",
                self._control(lambda _b, _p: [_request_json(r) for r in self._recorded()]),
                methods=["GET"],
            ),
            Route(
                f"{c}/invoices/{{invoice_id}}/status",
                self._control(lambda b, p: self.set_invoice_status(p["invoice_id"], b["status"])),
                methods=["POST"],
            ),
            Route(
                f"{c}/invoices/{{invoice_id}}/amount",
                self._control(
                    lambda b, p: self.set_invoice_amount(
                        p["invoice_id"], b["amount"], b.get("currency", "BTC")
                    )
                ),
                methods=["POST"],
            ),
            Route(
                f"{c}/fail-next",
                self._control(
                    lambda b, _p: self.fail_next(
                        b["method"],
                        b["path_regex"],
                        int(b.get("count", 1)),
                        int(b.get("status", 500)),
                        b.get("hang_seconds"),
                    )
                ),
                methods=["POST"],
            ),
            Route(
                f"{c}/receive-address",
                self._control(lambda b, _p: self.set_receive_address(b["address"])),
                methods=["PUT"],
            ),
            Route(
                f"{c}/payment-methods",
                self._control(lambda b, _p: self.set_payment_methods(b)),
                methods=["PUT"],
            ),
            Route(
                f"{c}/stores",
                self._control(lambda b, _p: self.add_store(b["store_id"], b["name"])),
                methods=["POST"],
            ),
            Route(
                f"{c}/api-keys",
                self._control(lambda b, _p: self.add_api_key(b["key"], b["permissions"])),
                methods=["POST"],
            ),
            Route(
                f"{c}/authorize",
                self._control(lambda b, _p: self.authorize(b["permissions"], b.get("store_ids"))),
                methods=["POST"],
            ),
            Route(f"{c}/webhooks/deliver", self._control_deliver, methods=["POST"]),
        ]

    def _control(
        self, action: Callable[[Any, dict[str, Any]], Any]
    ) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint running `action(json_body, path_params)`: 200 with its result (null
        for none), 404 for an unknown id, 400 for bad input."""

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else {}
                return JSONResponse(action(body, dict(request.path_params)))
            except KeyError as e:
                return JSONResponse({"error": f"not found or missing: {e}"}, status_code=404)
            except (ValueError, TypeError, re.error) as e:
                return JSONResponse({"error": str(e)}, status_code=400)

        return endpoint

    async def _control_deliver(self, request: Request) -> Response:
        body = await _json_object(request)
        if body is None or not isinstance(body.get("invoice_id"), str):
            return JSONResponse({"error": "invoice_id is required"}, status_code=400)
        try:
            response = await self.deliver_webhook(
                body["invoice_id"],
                body.get("event_type", "InvoiceSettled"),
                webhook_id=body.get("webhook_id"),
                bad_signature=bool(body.get("bad_signature", False)),
                omit_signature=bool(body.get("omit_signature", False)),
                body_overrides=body.get("body_overrides"),
            )
        except LookupError as e:
            return JSONResponse({"error": f"not found: {e}"}, status_code=404)
        except httpx.HTTPError as e:
            return JSONResponse({"error": f"delivery failed: {e!r}"}, status_code=502)
        return JSONResponse({"status": response.status_code, "body": response.text})

    def _state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "url": self.url,
                "user_id": self.user_id,
                "store_id": self.store_id,
                "api_key": self.api_key,
                "stores": dict(self._stores),
                "api_keys": copy.deepcopy(self._keys),
                "invoices": {i: _invoice_json(inv, self.url) for i, inv in self._invoices.items()},
                "webhooks": [
                    _webhook_json(w) | {"storeId": w.store_id} for w in self._webhooks.values()
                ],
                "lightning_payments": list(self._lightning_payments),
                "payment_methods": copy.deepcopy(self._payment_methods),
                "receive_address": self._receive_address,
            }


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _invoice_not_found() -> JSONResponse:
    return _error(404, "invoice-not-found", "The invoice was not found")


def _webhook_not_found() -> JSONResponse:
    return _error(404, "webhook-not-found", "The webhook was not found")


def _store_json(store_id: str, name: str) -> dict[str, Any]:
    return {
        "id": store_id,
        "name": name,
        "website": None,
        "defaultCurrency": "USD",
        "invoiceExpiration": DEFAULT_EXPIRATION_MINUTES * 60,
        "monitoringExpiration": DEFAULT_MONITORING_MINUTES * 60,
        "speedPolicy": "MediumSpeed",
        "paymentTolerance": 0.0,
        "archived": False,
        "anyoneCanCreateInvoice": False,
    }


def _invoice_json(invoice: FakeInvoice, base_url: str) -> dict[str, Any]:
    """InvoiceData as BTCPay's GreenfieldInvoiceController.ToModel builds it."""
    if invoice.status == "Settled":
        markable = ["Invalid"]
    elif invoice.status == "Invalid":
        markable = ["Settled"]
    else:
        markable = ["Settled", "Invalid"]
    return {
        "id": invoice.id,
        "storeId": invoice.store_id,
        "amount": invoice.amount,
        "paidAmount": invoice.amount if invoice.status in PAID_STATUSES else "0",
        "currency": invoice.currency,
        "type": invoice.type,
        "checkoutLink": f"{base_url}/i/{invoice.id}",
        "createdTime": invoice.created_time,
        "expirationTime": invoice.expiration_time,
        "monitoringExpiration": invoice.monitoring_expiration,
        "status": invoice.status,
        "additionalStatus": "None",
        "availableStatusesForManualMarking": markable,
        "archived": False,
        "metadata": copy.deepcopy(invoice.metadata),
        "checkout": copy.deepcopy(invoice.checkout),
        "receipt": {"enabled": True, "showQR": None, "showPayments": None},
    }


def _webhook_json(webhook: FakeWebhook) -> dict[str, Any]:
    """StoreWebhookData with its secret, as BTCPay answers a webhook creation."""
    return {
        "id": webhook.id,
        "enabled": webhook.enabled,
        "automaticRedelivery": webhook.automatic_redelivery,
        "url": webhook.url,
        "authorizedEvents": copy.deepcopy(webhook.authorized_events),
        "secret": webhook.secret,
    }


def _request_json(recorded: RecordedRequest) -> dict[str, Any]:
    return {
        "method": recorded.method,
        "path": recorded.path,
        "query": recorded.query,
        "headers": recorded.headers,
        "body": recorded.body.decode("utf-8", "replace"),
        "status": recorded.status,
        "response_body": recorded.response_body.decode("utf-8", "replace"),
    }
