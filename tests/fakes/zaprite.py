"""A fake Zaprite API (payments.md, sections 5 and 7.2) served over real HTTP on 127.0.0.1.

It speaks the calls the server makes, with Zaprite's paths, field names, status strings and
error envelope (`{code, message, issues?}`), and checks the Bearer key. Tests steer it from
Python (or over the unauthenticated `/_fake/...` control paths, for code that only has HTTP):
set an order's status or amount, attach saved payment profiles, choose the next charge's
outcome, fail calls, and post unsigned webhooks the way Zaprite does.

Control paths (JSON bodies; camelCase like Zaprite's own fields):

    GET  /_fake/orders                          -> {"orders": [order, ...]}
    GET  /_fake/contacts                        -> {"contacts": [contact, ...]}
    GET  /_fake/requests                        -> {"requests": [{method, path, query,
                                                                  status, body}, ...]}
    POST /_fake/orders/{key}/status             {"status"}
    POST /_fake/orders/{key}/amount             {"amount", "currency"}
    POST /_fake/orders/{key}/payment-profiles   {"id", "method"?, "expiresAt"?}
    POST /_fake/contacts/{id}/payment-profiles  {"id", "method"?, "expiresAt"?,
                                                 "sourceExternalUniqId"?}
    POST /_fake/next-charge                     {"status"?, "failStatus"?}
    POST /_fake/fail-next                       {"method", "pathRegex", "count"?, "status"?,
                                                 "hangSeconds"?}
    POST /_fake/webhook                         {"url", "orderId", "event"?, "shape"?,
                                                 "eventKey"?} -> {"status", "body"}

`{key}` is a Zaprite order id or an `externalUniqId`, as for `GET /v1/orders/{id}`. The
checkout page `<url>/pay/<order id>` has a "Pay" button that marks the order PAID and
redirects to its `redirectUrl`, for browser tests.
"""

from __future__ import annotations

import asyncio
import copy
import html
import json
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Literal, get_args

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from .base import RecordedRequest, RestartablePeer

DEFAULT_API_KEY = "zaprite-test-key"
ORDER_CURRENCIES = ("BTC", "USD", "EUR")
PAID_STATUSES = ("PAID", "COMPLETE", "OVERPAID")
WEBHOOK_TIMEOUT_SECONDS = 10.0
HANG_POLL_SECONDS = 0.05

WebhookShape = Literal["data.id", "data.object.id", "orderId", "id"]
EventKey = Literal["event", "eventType", "type", "name"]
ContactField = Literal["contact", "contactId", "both"]

_ORDER_FIELD_TYPES: dict[str, type] = {
    "amount": int,
    "currency": str,
    "externalUniqId": str,
    "redirectUrl": str,
    "label": str,
    "metadata": dict,
    "customerData": dict,
    "allowSavePaymentProfile": bool,
    "contactId": str,
}
_JSON_TYPE_NAMES: dict[type, str] = {
    bool: "boolean",
    int: "integer",
    float: "float",
    str: "string",
    dict: "object",
    list: "array",
    type(None): "null",
}


@dataclass
class _FailRule:
    method: str
    path: re.Pattern[str]
    remaining: int
    status: int
    hang_seconds: float | None


@dataclass
class _Call:
    """What a route handler gets: path groups, query string and the parsed JSON body."""

    params: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any]

    def require(self, key: str) -> Any:
        if key not in self.body:
            raise ValueError(f"missing field {key!r}")
        return self.body[key]


Handler = Callable[[_Call], Awaitable[Response]]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso(value: datetime | str | None) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def _error(status: int, message: str, issues: list[str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": HTTPStatus(status).name, "message": message}
    if issues:
        body["issues"] = [{"message": issue} for issue in issues]
    return JSONResponse(body, status_code=status)


def _type_issues(body: dict[str, Any], types: dict[str, type]) -> list[str]:
    """Zod-style complaints for fields of the wrong type. A null is a wrong type, not an
    absent field: Zaprite's optional fields refuse null (payments.md 5.3 never sends one)."""
    issues = []
    for key, expected in types.items():
        if key not in body:
            continue
        value = body[key]
        # bool is an int subclass in Python but not a number in JSON.
        wrong = not isinstance(value, expected) or (expected is int and isinstance(value, bool))
        if wrong:
            received = _JSON_TYPE_NAMES.get(type(value), "unknown")
            issues.append(f"{key}: Expected {_JSON_TYPE_NAMES[expected]}, received {received}")
    return issues


class FakeZaprite(RestartablePeer):
    """Zaprite's `/v1` API on a free 127.0.0.1 port; use as a context manager or start()/stop().

    `contact_field` picks where an order reports its contact: `contact` (`contact.id`),
    `contactId`, or both; the server must read either (payments.md 5.2).
    """

    def __init__(
        self, api_key: str = DEFAULT_API_KEY, *, contact_field: ContactField = "both"
    ) -> None:
        self.api_key = api_key
        self.contact_field: ContactField = contact_field
        self._lock = threading.Lock()
        super().__init__()
        self._orders: dict[str, dict[str, Any]] = {}
        self._contacts: dict[str, dict[str, Any]] = {}
        self._requests: list[RecordedRequest] = []
        self._fail_rules: list[_FailRule] = []
        self._next_charge_status = "PAID"
        self._next_charge_fail_status: int | None = None
        self._api_routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/v1/orders"), self._list_orders),
            ("POST", re.compile(r"/v1/orders"), self._create_order),
            ("POST", re.compile(r"/v1/orders/charge"), self._charge),
            ("GET", re.compile(r"/v1/orders/(?P<key>.+)"), self._get_order),
            ("POST", re.compile(r"/v1/contacts"), self._create_contact),
            ("GET", re.compile(r"/v1/contacts/(?P<key>.+)"), self._get_contact),
        ]
        self._control_routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/_fake/orders"), self._ctl_orders),
            ("GET", re.compile(r"/_fake/contacts"), self._ctl_contacts),
            ("GET", re.compile(r"/_fake/requests"), self._ctl_requests),
            ("POST", re.compile(r"/_fake/orders/(?P<key>.+)/status"), self._ctl_status),
            ("POST", re.compile(r"/_fake/orders/(?P<key>.+)/amount"), self._ctl_amount),
            (
                "POST",
                re.compile(r"/_fake/orders/(?P<key>.+)/payment-profiles"),
                self._ctl_order_profile,
            ),
            (
                "POST",
                re.compile(r"/_fake/contacts/(?P<key>.+)/payment-profiles"),
                self._ctl_contact_profile,
            ),
            ("POST", re.compile(r"/_fake/next-charge"), self._ctl_next_charge),
            ("POST", re.compile(r"/_fake/fail-next"), self._ctl_fail_next),
            ("POST", re.compile(r"/_fake/webhook"), self._ctl_webhook),
            ("GET", re.compile(r"/pay/(?P<key>.+)"), self._checkout_page),
            ("POST", re.compile(r"/pay/(?P<key>.+)"), self._checkout_pay),
        ]

    # -- inspection --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request to the API and unknown paths (not control paths or the checkout page)."""
        with self._lock:
            return list(self._requests)

    @property
    def orders(self) -> dict[str, dict[str, Any]]:
        """Orders by Zaprite id, as `GET /v1/orders/{id}` would return them (copies)."""
        with self._lock:
            return {oid: self._render_order(order) for oid, order in self._orders.items()}

    @property
    def contacts(self) -> dict[str, dict[str, Any]]:
        """Contacts by id, as `GET /v1/contacts/{id}` would return them (copies)."""
        with self._lock:
            return copy.deepcopy(self._contacts)

    def order(self, key: str) -> dict[str, Any]:
        """One order by Zaprite id or `externalUniqId` (KeyError when there is none)."""
        with self._lock:
            return self._render_order(self._order_or_raise(key))

    # -- controls ----------------------------------------------------------------------------

    def set_order_status(self, order_id: str, status: str) -> None:
        """Any string is allowed, so tests can send statuses the server does not know."""
        with self._lock:
            self._set_status(self._order_or_raise(order_id), status)

    def set_order_amount(self, order_id: str, amount: int, currency: str) -> None:
        with self._lock:
            order = self._order_or_raise(order_id)
            order["amount"] = amount
            order["currency"] = currency

    def attach_payment_profile(
        self,
        contact_id: str,
        profile_id: str,
        method: str = "card",
        expires_at: datetime | str | None = None,
        source_external_uniq_id: str | None = None,
    ) -> dict[str, Any]:
        """Save a payment profile on a contact; an existing profile with that id is replaced.

        `sourceOrder` is null when `source_external_uniq_id` is None.
        """
        with self._lock:
            contact = self._contacts.get(contact_id)
            if contact is None:
                raise KeyError(f"no contact {contact_id!r}")
            source: dict[str, Any] | None = None
            if source_external_uniq_id is not None:
                source = {"externalUniqId": source_external_uniq_id}
                order = self._find_order(source_external_uniq_id)
                if order is not None:
                    source["id"] = order["id"]
            profile = {
                "id": profile_id,
                "method": method,
                "expiresAt": _iso(expires_at),
                "sourceOrder": source,
                "createdAt": _now(),
            }
            profiles = [p for p in contact["paymentProfiles"] if p["id"] != profile_id]
            contact["paymentProfiles"] = [*profiles, profile]
            return copy.deepcopy(profile)

    def attach_payment_profile_to_order(
        self,
        order_id: str,
        profile_id: str,
        method: str = "card",
        expires_at: datetime | str | None = None,
    ) -> dict[str, Any]:
        """What a buyer saving a card at checkout does: a profile on the order's contact whose
        `sourceOrder` is that order. ValueError when the order has no contact."""
        with self._lock:
            order = self._order_or_raise(order_id)
            zaprite_id, contact_id = order["id"], order["contactId"]
            external = order["externalUniqId"]
        if contact_id is None:
            raise ValueError(f"order {zaprite_id!r} has no contact")
        return self.attach_payment_profile(
            contact_id, profile_id, method, expires_at, source_external_uniq_id=external
        )

    def set_next_charge(self, status: str = "PAID", fail_status: int | None = None) -> None:
        """Outcome of the next `POST /v1/orders/charge` only; later charges answer PAID again.

        With `fail_status` the charge answers that HTTP error and the order is unchanged;
        otherwise it answers the order with `status`, which the order keeps.
        """
        with self._lock:
            self._next_charge_status = status
            self._next_charge_fail_status = fail_status

    def fail_next(
        self,
        method: str,
        path_regex: str,
        count: int = 1,
        status: int = 500,
        hang_seconds: float | None = None,
    ) -> None:
        """Answer the next `count` requests whose method matches (`*` for any) and whose path
        fully matches `path_regex` with `status`, after sleeping `hang_seconds` if given.
        Failures come before the key check; rules are used in the order they were added."""
        with self._lock:
            self._fail_rules.append(
                _FailRule(method.upper(), re.compile(path_regex), count, status, hang_seconds)
            )

    # -- unsigned webhooks -------------------------------------------------------------------

    def webhook_body(
        self,
        order_id: str,
        *,
        event: str = "order.paid",
        shape: WebhookShape = "data.id",
        event_key: EventKey | None = "event",
    ) -> dict[str, Any]:
        """The body Zaprite would post. In the `data` shapes the payload is the order (as Zaprite
        sends it) when `order_id` is a known Zaprite id, else just `{"id": order_id}`.
        `event_key=None` leaves the event name out."""
        if shape not in get_args(WebhookShape):
            raise ValueError(f"unknown webhook shape {shape!r}")
        if event_key is not None and event_key not in get_args(EventKey):
            raise ValueError(f"unknown event key {event_key!r}")
        with self._lock:
            known = self._orders.get(order_id)
            payload = self._render_order(known) if known is not None else {"id": order_id}
        body: dict[str, Any] = {} if event_key is None else {event_key: event}
        if shape == "data.id":
            body["data"] = payload
        elif shape == "data.object.id":
            body["data"] = {"object": payload}
        else:
            body[shape] = order_id
        return body

    async def post_webhook(
        self,
        url: str,
        *,
        order_id: str,
        event: str = "order.paid",
        shape: WebhookShape = "data.id",
        event_key: EventKey | None = "event",
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        """POST an unsigned webhook to the full `url`, through `client` when given (for example
        one bound to the app with an ASGI transport), else over real HTTP."""
        content = json.dumps(
            self.webhook_body(order_id, event=event, shape=shape, event_key=event_key)
        ).encode()
        headers = {"content-type": "application/json"}
        if client is not None:
            return await client.post(url, content=content, headers=headers)
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_SECONDS) as fresh:
            return await fresh.post(url, content=content, headers=headers)

    def post_webhook_sync(
        self,
        url: str,
        *,
        order_id: str,
        event: str = "order.paid",
        shape: WebhookShape = "data.id",
        event_key: EventKey | None = "event",
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        content = json.dumps(
            self.webhook_body(order_id, event=event, shape=shape, event_key=event_key)
        ).encode()
        headers = {"content-type": "application/json"}
        if client is not None:
            return client.post(url, content=content, headers=headers)
        with httpx.Client(timeout=WEBHOOK_TIMEOUT_SECONDS) as fresh:
            return fresh.post(url, content=content, headers=headers)

    # -- state helpers (call with the lock held) ---------------------------------------------

    def _find_order(self, key: str) -> dict[str, Any] | None:
        if key in self._orders:
            return self._orders[key]
        # Zaprite does not dedupe on externalUniqId; the newest order wins.
        for order in reversed(self._orders.values()):
            if order.get("externalUniqId") == key:
                return order
        return None

    def _order_or_raise(self, key: str) -> dict[str, Any]:
        order = self._find_order(key)
        if order is None:
            raise KeyError(f"no order {key!r}")
        return order

    def _set_status(self, order: dict[str, Any], status: str) -> None:
        order["status"] = status
        if status in PAID_STATUSES and order["paidAt"] is None:
            order["paidAt"] = _now()

    def _render_order(self, order: dict[str, Any]) -> dict[str, Any]:
        rendered = copy.deepcopy(order)
        contact_id = rendered.pop("contactId")
        if self.contact_field in ("contactId", "both"):
            rendered["contactId"] = contact_id
        if self.contact_field in ("contact", "both"):
            contact = self._contacts.get(contact_id) if contact_id is not None else None
            rendered["contact"] = (
                None if contact is None else {k: contact[k] for k in ("id", "email", "legalName")}
            )
        return rendered

    # -- HTTP plumbing -----------------------------------------------------------------------

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        path: str = scope["path"]
        body = await request.body()
        control = self._match(self._control_routes, request.method, path)
        if control is not None:
            response = await self._run(control, request, body, authenticate=False)
        else:
            record = RecordedRequest(
                method=request.method,
                path=path,
                query=request.url.query,
                headers=dict(request.headers),
                body=body,
            )
            with self._lock:
                self._requests.append(record)
            response = await self._api(request, path, body)
            record.status = response.status_code
            record.response_body = bytes(response.body)
        await response(scope, receive, send)

    @staticmethod
    def _match(
        routes: list[tuple[str, re.Pattern[str], Handler]], method: str, path: str
    ) -> tuple[Handler, dict[str, str]] | None:
        for route_method, pattern, handler in routes:
            found = pattern.fullmatch(path)
            if found is not None and route_method == method:
                return handler, found.groupdict()
        return None

    async def _api(self, request: Request, path: str, body: bytes) -> Response:
        rule = self._take_fail_rule(request.method, path)
        if rule is not None:
            if rule.hang_seconds is not None:
                await self._sleep_unless_stopped(rule.hang_seconds)
            return _error(rule.status, "injected failure")
        if not self._authorized(request):
            return _error(401, "Invalid or missing API key")
        route = self._match(self._api_routes, request.method, path)
        if route is None:
            return _error(404, f"No route {request.method} {path}")
        return await self._run(route, request, body, authenticate=True)

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(token, self.api_key)

    def _take_fail_rule(self, method: str, path: str) -> _FailRule | None:
        with self._lock:
            for rule in self._fail_rules:
                if rule.method in ("*", method) and rule.path.fullmatch(path):
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._fail_rules.remove(rule)
                    return rule
        return None

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, HANG_POLL_SECONDS))

    async def _run(
        self,
        route: tuple[Handler, dict[str, str]],
        request: Request,
        body: bytes,
        *,
        authenticate: bool,
    ) -> Response:
        handler, params = route
        parsed: dict[str, Any] = {}
        if request.method == "POST" and request.headers.get("content-type", "").startswith(
            "application/json"
        ):
            try:
                loaded = json.loads(body) if body else {}
            except ValueError:
                return _error(400, "Request body is not valid JSON")
            if not isinstance(loaded, dict):
                return _error(400, "Request body must be a JSON object")
            parsed = loaded
        elif request.method == "POST" and authenticate:
            return _error(400, "Content-Type must be application/json")
        call = _Call(params=params, query=dict(request.query_params), body=parsed)
        if authenticate:
            return await handler(call)
        try:
            return await handler(call)
        except KeyError as exc:
            return _error(404, str(exc.args[0]))
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))

    # -- Zaprite API -------------------------------------------------------------------------

    async def _list_orders(self, call: _Call) -> Response:
        raw_limit = call.query.get("limit", "20")
        if not raw_limit.isdigit() or int(raw_limit) < 1:
            return _error(
                400, "Invalid query", [f"limit: Expected a positive integer: {raw_limit}"]
            )
        with self._lock:
            newest_first = list(reversed(self._orders.values()))
            items = [self._render_order(o) for o in newest_first[: int(raw_limit)]]
            total = len(self._orders)
        return JSONResponse({"items": items, "total": total})

    async def _create_order(self, call: _Call) -> Response:
        body = call.body
        issues = [f"{key}: Required" for key in ("amount", "currency") if key not in body]
        issues += _type_issues(body, _ORDER_FIELD_TYPES)
        customer = body.get("customerData")
        if isinstance(customer, dict):
            issues += [f"customerData.{i}" for i in _type_issues(customer, {"email": str})]
        if not issues and body["amount"] <= 0:
            issues.append("amount: Number must be greater than 0")
        if not issues and body["currency"] not in ORDER_CURRENCIES:
            issues.append(f"currency: Invalid enum value '{body['currency']}'")
        if issues:
            return _error(400, "Invalid input data", issues)
        contact_id = body.get("contactId")
        if body.get("allowSavePaymentProfile") is True and contact_id is None:
            return _error(400, "contactId is required when allowSavePaymentProfile is true")
        with self._lock:
            if contact_id is not None and contact_id not in self._contacts:
                return _error(400, f"Contact {contact_id} not found")
            order_id = f"od_{secrets.token_hex(8)}"
            order: dict[str, Any] = {
                "id": order_id,
                "status": "PENDING",
                "amount": body["amount"],
                "currency": body["currency"],
                "externalUniqId": body.get("externalUniqId"),
                "label": body.get("label"),
                "redirectUrl": body.get("redirectUrl"),
                "checkoutUrl": f"{self.url}/pay/{order_id}",
                "metadata": body.get("metadata", {}),
                "customerData": customer,
                "allowSavePaymentProfile": body.get("allowSavePaymentProfile", False),
                "contactId": contact_id,
                "createdAt": _now(),
                "paidAt": None,
            }
            self._orders[order_id] = order
            return JSONResponse(self._render_order(order))

    async def _get_order(self, call: _Call) -> Response:
        with self._lock:
            order = self._find_order(call.params["key"])
            if order is None:
                return _error(404, f"Order {call.params['key']} not found")
            return JSONResponse(self._render_order(order))

    async def _charge(self, call: _Call) -> Response:
        issues = [f"{k}: Required" for k in ("orderId", "paymentProfileId") if k not in call.body]
        issues += _type_issues(call.body, {"orderId": str, "paymentProfileId": str})
        if issues:
            return _error(400, "Invalid input data", issues)
        with self._lock:
            order = self._find_order(call.body["orderId"])
            if order is None:
                return _error(404, f"Order {call.body['orderId']} not found")
            profile_id = call.body["paymentProfileId"]
            if not any(
                p["id"] == profile_id
                for contact in self._contacts.values()
                for p in contact["paymentProfiles"]
            ):
                return _error(400, f"Payment profile {profile_id} not found")
            status, fail_status = self._next_charge_status, self._next_charge_fail_status
            self._next_charge_status, self._next_charge_fail_status = "PAID", None
            if fail_status is not None:
                return _error(fail_status, "Charge failed")
            self._set_status(order, status)
            return JSONResponse(self._render_order(order))

    async def _create_contact(self, call: _Call) -> Response:
        types = {"email": str, "legalName": str}
        issues = [f"{key}: Required" for key in types if key not in call.body]
        issues += _type_issues(call.body, types)
        if issues:
            return _error(400, "Invalid input data", issues)
        contact = {
            "id": f"ct_{secrets.token_hex(8)}",
            "email": call.body["email"],
            "legalName": call.body["legalName"],
            "paymentProfiles": [],
            "createdAt": _now(),
        }
        with self._lock:
            self._contacts[contact["id"]] = contact
            return JSONResponse(copy.deepcopy(contact))

    async def _get_contact(self, call: _Call) -> Response:
        with self._lock:
            contact = self._contacts.get(call.params["key"])
            if contact is None:
                return _error(404, f"Contact {call.params['key']} not found")
            return JSONResponse(copy.deepcopy(contact))

    # -- control paths and checkout page -----------------------------------------------------

    async def _ctl_orders(self, call: _Call) -> Response:
        return JSONResponse({"orders": list(self.orders.values())})

    async def _ctl_contacts(self, call: _Call) -> Response:
        return JSONResponse({"contacts": list(self.contacts.values())})

    async def _ctl_requests(self, call: _Call) -> Response:
        rows = [
            {
                "method": r.method,
                "path": r.path,
                "query": r.query,
                "status": r.status,
                "body": r.body.decode(errors="replace"),
            }
            for r in self.requests
        ]
        return JSONResponse({"requests": rows})

    async def _ctl_status(self, call: _Call) -> Response:
        self.set_order_status(call.params["key"], call.require("status"))
        return JSONResponse(self.order(call.params["key"]))

    async def _ctl_amount(self, call: _Call) -> Response:
        self.set_order_amount(call.params["key"], call.require("amount"), call.require("currency"))
        return JSONResponse(self.order(call.params["key"]))

    async def _ctl_order_profile(self, call: _Call) -> Response:
        profile = self.attach_payment_profile_to_order(
            call.params["key"],
            call.require("id"),
            call.body.get("method", "card"),
            call.body.get("expiresAt"),
        )
        return JSONResponse(profile)

    async def _ctl_contact_profile(self, call: _Call) -> Response:
        profile = self.attach_payment_profile(
            call.params["key"],
            call.require("id"),
            call.body.get("method", "card"),
            call.body.get("expiresAt"),
            source_external_uniq_id=call.body.get("sourceExternalUniqId"),
        )
        return JSONResponse(profile)

    async def _ctl_next_charge(self, call: _Call) -> Response:
        self.set_next_charge(call.body.get("status", "PAID"), call.body.get("failStatus"))
        return JSONResponse({"ok": True})

    async def _ctl_fail_next(self, call: _Call) -> Response:
        self.fail_next(
            call.require("method"),
            call.require("pathRegex"),
            call.body.get("count", 1),
            call.body.get("status", 500),
            call.body.get("hangSeconds"),
        )
        return JSONResponse({"ok": True})

    async def _ctl_webhook(self, call: _Call) -> Response:
        try:
            response = await self.post_webhook(
                call.require("url"),
                order_id=call.require("orderId"),
                event=call.body.get("event", "order.paid"),
                shape=call.body.get("shape", "data.id"),
                event_key=call.body.get("eventKey", "event"),
            )
        except httpx.HTTPError as exc:
            return _error(502, f"webhook delivery failed: {exc!r}")
        return JSONResponse({"status": response.status_code, "body": response.text})

    async def _checkout_page(self, call: _Call) -> Response:
        order = self.order(call.params["key"])
        text = html.escape(
            f"{order['label'] or order['id']}: {order['amount']} "
            f"{order['currency']} ({order['status']})"
        )
        action = html.escape(f"/pay/{order['id']}")
        return HTMLResponse(
            "<!doctype html><title>Fake Zaprite checkout</title>"
            f"<p id=order>{text}</p>"
            f"<form method=post action='{action}'><button id=pay>Pay</button></form>"
        )

    async def _checkout_pay(self, call: _Call) -> Response:
        self.set_order_status(call.params["key"], "PAID")
        order = self.order(call.params["key"])
        if order["redirectUrl"]:
            return RedirectResponse(order["redirectUrl"], status_code=303)
        return HTMLResponse(f"<p id=paid>{html.escape(order['id'])} PAID</p>")
