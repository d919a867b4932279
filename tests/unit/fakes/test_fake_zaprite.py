"""The fake Zaprite server, driven with plain httpx over real HTTP."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fakes.base import ThreadedServer
from fakes.zaprite import ContactField, EventKey, FakeZaprite, WebhookShape

INVOICE_ID = "inv_0001"


@pytest.fixture
def zaprite() -> Iterator[FakeZaprite]:
    with FakeZaprite() as fake:
        yield fake


@pytest.fixture
def api(zaprite: FakeZaprite) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {zaprite.api_key}"}
    with httpx.Client(base_url=zaprite.url, headers=headers, timeout=5) as client:
        yield client


class Receiver:
    """A tiny webhook endpoint that keeps what it was sent."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> JSONResponse:
        self.deliveries.append((dict(request.headers), await request.body()))
        return JSONResponse({"received": True}, status_code=202)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hook = Receiver()
    server = ThreadedServer(hook.app).start()
    try:
        yield hook, f"{server.url}/hook"
    finally:
        server.stop()


def create_order(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"amount": 7000, "currency": "BTC", "externalUniqId": INVOICE_ID, **fields}
    response = api.post("/v1/orders", json=body)
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()
    return order


def create_contact(api: httpx.Client, email: str = "buyer@example.test") -> dict[str, Any]:
    response = api.post("/v1/contacts", json={"email": email, "legalName": "Ada Buyer"})
    assert response.status_code == 200, response.text
    contact: dict[str, Any] = response.json()
    return contact


# -- key check ---------------------------------------------------------------------------------


def test_ping_lists_orders_with_the_right_key(zaprite: FakeZaprite, api: httpx.Client) -> None:
    create_order(api, externalUniqId="a")
    newest = create_order(api, externalUniqId="b")
    response = api.get("/v1/orders", params={"limit": 1})
    assert response.status_code == 200
    assert [o["id"] for o in response.json()["items"]] == [newest["id"]]
    assert response.json()["total"] == 2
    assert zaprite.requests[-1].query == "limit=1"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Token zaprite-test-key"}],
)
def test_a_wrong_or_missing_key_is_401(zaprite: FakeZaprite, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/v1/orders?limit=1"),
        ("POST", "/v1/orders"),
        ("GET", "/v1/orders/x"),
        ("POST", "/v1/orders/charge"),
        ("POST", "/v1/contacts"),
        ("GET", "/v1/contacts/x"),
    ]:
        response = httpx.request(method, zaprite.url + path, headers=headers, json={})
        assert response.status_code == 401, (method, path)
        assert response.json()["code"] == "UNAUTHORIZED"
    assert zaprite.orders == {} and zaprite.contacts == {}
    assert [r.status for r in zaprite.requests] == [401] * 6


# -- orders ------------------------------------------------------------------------------------


def test_create_order_answers_zaprite_fields(zaprite: FakeZaprite, api: httpx.Client) -> None:
    order = create_order(
        api,
        redirectUrl="https://shop.example/thanks",
        label=f"Keysat order {INVOICE_ID}",
        metadata={"invoice_id": INVOICE_ID},
        customerData={"email": "buyer@example.test"},
    )
    assert order["id"].startswith("od_")
    assert order["checkoutUrl"] == f"{zaprite.url}/pay/{order['id']}"
    assert order["status"] == "PENDING"
    assert (order["amount"], order["currency"]) == (7000, "BTC")
    assert order["externalUniqId"] == INVOICE_ID
    assert order["label"] == "Keysat order inv_0001"
    assert order["redirectUrl"] == "https://shop.example/thanks"
    assert order["metadata"] == {"invoice_id": INVOICE_ID}
    assert order["customerData"] == {"email": "buyer@example.test"}
    assert order["contact"] is None and order["contactId"] is None
    assert zaprite.orders == {order["id"]: order}
    sent = zaprite.requests[-1]
    assert (sent.method, sent.path, sent.status) == ("POST", "/v1/orders", 200)
    assert sent.json()["amount"] == 7000
    assert sent.headers["authorization"] == "Bearer zaprite-test-key"


@pytest.mark.parametrize(
    ("fields", "issue"),
    [
        ({"amount": "7000"}, "amount: Expected integer, received string"),
        ({"amount": 12.5}, "amount: Expected integer, received float"),
        ({"amount": True}, "amount: Expected integer, received boolean"),
        ({"amount": 0}, "amount: Number must be greater than 0"),
        ({"currency": "SAT"}, "currency: Invalid enum value 'SAT'"),
        ({"label": None}, "label: Expected string, received null"),
        ({"customerData": {"email": None}}, "customerData.email: Expected string, received null"),
        ({"allowSavePaymentProfile": "yes"}, "allowSavePaymentProfile: Expected boolean"),
    ],
)
def test_create_order_rejects_bad_fields(
    zaprite: FakeZaprite, api: httpx.Client, fields: dict[str, Any], issue: str
) -> None:
    body = {"amount": 7000, "currency": "USD", "externalUniqId": INVOICE_ID, **fields}
    response = api.post("/v1/orders", json=body)
    assert response.status_code == 400
    assert response.json()["code"] == "BAD_REQUEST"
    assert any(i["message"].startswith(issue) for i in response.json()["issues"])
    assert zaprite.orders == {}


def test_create_order_requires_amount_and_currency(api: httpx.Client) -> None:
    response = api.post("/v1/orders", json={"externalUniqId": INVOICE_ID})
    messages = [i["message"] for i in response.json()["issues"]]
    assert response.status_code == 400
    assert messages == ["amount: Required", "currency: Required"]


def test_saving_a_profile_needs_a_known_contact(zaprite: FakeZaprite, api: httpx.Client) -> None:
    body = {"amount": 1500, "currency": "USD", "allowSavePaymentProfile": True}
    response = api.post("/v1/orders", json=body)
    assert response.status_code == 400
    assert response.json()["message"] == (
        "contactId is required when allowSavePaymentProfile is true"
    )
    response = api.post("/v1/orders", json={**body, "contactId": "ct_missing"})
    assert response.status_code == 400
    assert zaprite.orders == {}


def test_order_is_read_by_zaprite_id_or_external_uniq_id(api: httpx.Client) -> None:
    order = create_order(api, externalUniqId="our/invoice 7")
    by_id = api.get(f"/v1/orders/{order['id']}")
    by_external = api.get("/v1/orders/" + "our%2Finvoice%207")
    assert by_id.status_code == by_external.status_code == 200
    assert by_id.json() == by_external.json() == order
    missing = api.get("/v1/orders/od_nope")
    assert missing.status_code == 404
    assert missing.json()["code"] == "NOT_FOUND"


def test_newest_order_wins_for_a_reused_external_uniq_id(api: httpx.Client) -> None:
    create_order(api)
    second = create_order(api)
    assert api.get(f"/v1/orders/{INVOICE_ID}").json()["id"] == second["id"]


@pytest.mark.parametrize("status", ["PROCESSING", "PAID", "EXPIRED", "CANCELED", "WEIRD_NEW"])
def test_set_order_status(zaprite: FakeZaprite, api: httpx.Client, status: str) -> None:
    order = create_order(api)
    zaprite.set_order_status(INVOICE_ID, status)
    read = api.get(f"/v1/orders/{order['id']}").json()
    assert read["status"] == status
    assert (read["paidAt"] is not None) is (status == "PAID")


def test_set_order_amount(zaprite: FakeZaprite, api: httpx.Client) -> None:
    order = create_order(api)
    zaprite.set_order_amount(order["id"], 1, "BTC")
    assert (zaprite.order(INVOICE_ID)["amount"], zaprite.order(INVOICE_ID)["currency"]) == (
        1,
        "BTC",
    )
    zaprite.set_order_amount(INVOICE_ID, 1999, "EUR")
    read = api.get(f"/v1/orders/{order['id']}").json()
    assert (read["amount"], read["currency"]) == (1999, "EUR")
    with pytest.raises(KeyError):
        zaprite.set_order_status("od_nope", "PAID")


# -- contacts and saved profiles ---------------------------------------------------------------


def test_contact_round_trip_with_payment_profiles(zaprite: FakeZaprite, api: httpx.Client) -> None:
    contact = create_contact(api)
    assert contact["id"].startswith("ct_")
    assert (contact["email"], contact["legalName"]) == ("buyer@example.test", "Ada Buyer")
    assert contact["paymentProfiles"] == []
    order = create_order(api, contactId=contact["id"], allowSavePaymentProfile=True)
    assert order["contactId"] == contact["id"]
    assert order["contact"]["id"] == contact["id"]
    assert order["allowSavePaymentProfile"] is True

    zaprite.attach_payment_profile_to_order(
        INVOICE_ID, "pp_card", expires_at="2030-01-31T00:00:00Z"
    )
    zaprite.attach_payment_profile(contact["id"], "pp_other", method="bank")
    profiles = api.get(f"/v1/contacts/{contact['id']}").json()["paymentProfiles"]
    assert [(p["id"], p["method"], p["expiresAt"]) for p in profiles] == [
        ("pp_card", "card", "2030-01-31T00:00:00Z"),
        ("pp_other", "bank", None),
    ]
    assert profiles[0]["sourceOrder"] == {"externalUniqId": INVOICE_ID, "id": order["id"]}
    assert profiles[1]["sourceOrder"] is None
    assert api.get("/v1/contacts/ct_nope").status_code == 404


def test_profile_for_an_order_without_contact_is_refused(
    zaprite: FakeZaprite, api: httpx.Client
) -> None:
    create_order(api)
    with pytest.raises(ValueError, match="has no contact"):
        zaprite.attach_payment_profile_to_order(INVOICE_ID, "pp_1")


def test_create_contact_requires_email_and_legal_name(api: httpx.Client) -> None:
    response = api.post("/v1/contacts", json={"email": "buyer@example.test"})
    assert response.status_code == 400
    assert [i["message"] for i in response.json()["issues"]] == ["legalName: Required"]


@pytest.mark.parametrize(
    ("contact_field", "keys"),
    [("contact", {"contact"}), ("contactId", {"contactId"}), ("both", {"contact", "contactId"})],
)
def test_contact_field_variants(contact_field: ContactField, keys: set[str]) -> None:
    with FakeZaprite(contact_field=contact_field) as fake:
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        with httpx.Client(base_url=fake.url, headers=headers) as api:
            contact = create_contact(api)
            order = create_order(api, contactId=contact["id"])
    assert {"contact", "contactId"} & order.keys() == keys
    assert order.get("contactId", contact["id"]) == contact["id"]
    assert order.get("contact", {"id": contact["id"]})["id"] == contact["id"]


# -- charge ------------------------------------------------------------------------------------


@pytest.fixture
def renewal(zaprite: FakeZaprite, api: httpx.Client) -> dict[str, Any]:
    """A saved card from a first order, and an unpaid renewal order to charge it for."""
    contact = create_contact(api)
    create_order(api, contactId=contact["id"], allowSavePaymentProfile=True)
    zaprite.attach_payment_profile_to_order(INVOICE_ID, "pp_card")
    return create_order(api, amount=1500, currency="USD", externalUniqId="inv_renewal")


def charge(api: httpx.Client, order_id: str, profile_id: str = "pp_card") -> httpx.Response:
    return api.post("/v1/orders/charge", json={"orderId": order_id, "paymentProfileId": profile_id})


def test_charge_defaults_to_paid(
    zaprite: FakeZaprite, api: httpx.Client, renewal: dict[str, Any]
) -> None:
    response = charge(api, renewal["id"])
    assert response.status_code == 200
    assert response.json()["status"] == "PAID"
    assert zaprite.order("inv_renewal")["status"] == "PAID"


def test_next_charge_outcome_is_one_shot(
    zaprite: FakeZaprite, api: httpx.Client, renewal: dict[str, Any]
) -> None:
    zaprite.set_next_charge("PROCESSING")
    assert charge(api, renewal["id"]).json()["status"] == "PROCESSING"
    assert zaprite.order(renewal["id"])["status"] == "PROCESSING"
    assert charge(api, renewal["id"]).json()["status"] == "PAID"


def test_next_charge_can_fail_with_an_http_error(
    zaprite: FakeZaprite, api: httpx.Client, renewal: dict[str, Any]
) -> None:
    zaprite.set_next_charge(fail_status=402)
    response = charge(api, renewal["id"])
    assert response.status_code == 402
    assert response.json()["code"] == "PAYMENT_REQUIRED"
    assert zaprite.order(renewal["id"])["status"] == "PENDING"


def test_charge_checks_order_and_profile(api: httpx.Client, renewal: dict[str, Any]) -> None:
    assert charge(api, "od_nope").status_code == 404
    assert charge(api, renewal["id"], "pp_nope").status_code == 400
    response = api.post("/v1/orders/charge", json={"orderId": renewal["id"]})
    assert response.status_code == 400
    assert response.json()["issues"] == [{"message": "paymentProfileId: Required"}]


# -- injected failures -------------------------------------------------------------------------


def test_fail_next_counts_and_scopes_by_method_and_path(
    zaprite: FakeZaprite, api: httpx.Client
) -> None:
    order = create_order(api)
    zaprite.fail_next("GET", r"/v1/orders/[^/]+", count=2, status=503)
    assert api.get("/v1/orders", params={"limit": 1}).status_code == 200
    assert create_order(api, externalUniqId="other")["status"] == "PENDING"
    first, second, third = (api.get(f"/v1/orders/{order['id']}") for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.json()["code"] == "SERVICE_UNAVAILABLE"


def test_failures_come_before_the_key_check(zaprite: FakeZaprite) -> None:
    zaprite.fail_next("*", r"/v1/.*", status=500)
    assert httpx.get(f"{zaprite.url}/v1/orders").status_code == 500
    assert httpx.get(f"{zaprite.url}/v1/orders").status_code == 401


def test_fail_next_can_hang_past_the_client_timeout(
    zaprite: FakeZaprite, api: httpx.Client
) -> None:
    zaprite.fail_next("POST", "/v1/orders", hang_seconds=2.0)
    with pytest.raises(httpx.ReadTimeout):
        api.post("/v1/orders", json={"amount": 1, "currency": "BTC"}, timeout=httpx.Timeout(0.3))
    assert zaprite.orders == {}


# -- control paths -----------------------------------------------------------------------------


def test_http_control_paths(zaprite: FakeZaprite, api: httpx.Client) -> None:
    contact = create_contact(api)
    order = create_order(api, contactId=contact["id"])
    ctl = httpx.Client(base_url=f"{zaprite.url}/_fake")

    assert (
        ctl.post(f"/orders/{INVOICE_ID}/status", json={"status": "OVERPAID"}).json()["status"]
        == "OVERPAID"
    )
    amount = ctl.post(f"/orders/{order['id']}/amount", json={"amount": 5, "currency": "BTC"})
    assert (amount.json()["amount"], amount.json()["currency"]) == (5, "BTC")
    profile = ctl.post(f"/orders/{INVOICE_ID}/payment-profiles", json={"id": "pp_1"}).json()
    assert profile["sourceOrder"]["externalUniqId"] == INVOICE_ID
    ctl.post(
        f"/contacts/{contact['id']}/payment-profiles",
        json={
            "id": "pp_2",
            "method": "card",
            "expiresAt": "2031-02-28T00:00:00Z",
            "sourceExternalUniqId": "inv_x",
        },
    )
    assert [p["id"] for p in zaprite.contacts[contact["id"]]["paymentProfiles"]] == ["pp_1", "pp_2"]

    ctl.post("/next-charge", json={"failStatus": 409})
    assert charge(api, order["id"], "pp_1").status_code == 409
    ctl.post("/fail-next", json={"method": "GET", "pathRegex": "/v1/contacts/.*", "status": 502})
    assert api.get(f"/v1/contacts/{contact['id']}").status_code == 502

    assert ctl.get("/orders").json()["orders"] == [zaprite.order(order["id"])]
    assert ctl.get("/contacts").json()["contacts"][0]["id"] == contact["id"]
    paths = [r["path"] for r in ctl.get("/requests").json()["requests"]]
    assert paths[-1] == f"/v1/contacts/{contact['id']}"
    assert not any(p.startswith("/_fake") for p in paths)

    assert ctl.post("/orders/od_nope/status", json={"status": "PAID"}).status_code == 404
    assert ctl.post(f"/orders/{INVOICE_ID}/status", json={}).status_code == 400
    ctl.close()


def test_checkout_page_pays_and_redirects(zaprite: FakeZaprite, api: httpx.Client) -> None:
    order = create_order(api, redirectUrl="https://shop.example/done")
    page = httpx.get(order["checkoutUrl"])
    assert page.status_code == 200
    assert "7000 BTC (PENDING)" in page.text
    paid = httpx.post(order["checkoutUrl"])
    assert paid.status_code == 303
    assert paid.headers["location"] == "https://shop.example/done"
    assert zaprite.order(order["id"])["status"] == "PAID"
    assert all(not r.path.startswith("/pay/") for r in zaprite.requests)


def test_concurrent_creates_get_distinct_orders(zaprite: FakeZaprite) -> None:
    def one(i: int) -> str:
        headers = {"Authorization": f"Bearer {zaprite.api_key}"}
        body = {"amount": 100 + i, "currency": "USD", "externalUniqId": f"inv_{i}"}
        return str(httpx.post(f"{zaprite.url}/v1/orders", json=body, headers=headers).json()["id"])

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(one, range(24)))
    assert len(set(ids)) == 24
    assert set(zaprite.orders) == set(ids)
    assert len(zaprite.requests) == 24


# -- unsigned webhooks -------------------------------------------------------------------------


def order_id_in(body: dict[str, Any]) -> Any:
    """Where payments.md 5.5 looks for the order id, first hit wins."""
    data = body.get("data")
    if isinstance(data, dict):
        if isinstance(data.get("id"), str):
            return data["id"]
        if isinstance(data.get("object"), dict) and isinstance(data["object"].get("id"), str):
            return data["object"]["id"]
    return body.get("orderId", body.get("id"))


@pytest.mark.parametrize("shape", ["data.id", "data.object.id", "orderId", "id"])
async def test_post_webhook_each_shape_unsigned(
    zaprite: FakeZaprite, api: httpx.Client, receiver: tuple[Receiver, str], shape: WebhookShape
) -> None:
    hook, url = receiver
    order = create_order(api)
    zaprite.set_order_status(order["id"], "PAID")
    response = await zaprite.post_webhook(url, order_id=order["id"], shape=shape)
    assert response.status_code == 202
    [(headers, raw)] = hook.deliveries
    body = json.loads(raw)
    assert body["event"] == "order.paid"
    assert order_id_in(body) == order["id"]
    assert headers["content-type"] == "application/json"
    assert not [h for h in headers if "sig" in h or h.startswith("x-")]
    # The payload of the data shapes is the order as Zaprite reports it.
    if shape == "data.id":
        assert body["data"] == zaprite.order(order["id"])
    elif shape == "data.object.id":
        assert body["data"] == {"object": zaprite.order(order["id"])}
    else:
        assert body == {"event": "order.paid", shape: order["id"]}


@pytest.mark.parametrize("event_key", ["event", "eventType", "type", "name"])
def test_post_webhook_sync_event_key_variants(
    zaprite: FakeZaprite, receiver: tuple[Receiver, str], event_key: EventKey
) -> None:
    hook, url = receiver
    response = zaprite.post_webhook_sync(
        url, order_id="od_unknown", event="order.expired", event_key=event_key
    )
    assert response.status_code == 202
    body = json.loads(hook.deliveries[0][1])
    assert body == {event_key: "order.expired", "data": {"id": "od_unknown"}}


def test_webhook_without_event_name(zaprite: FakeZaprite) -> None:
    assert zaprite.webhook_body("od_1", shape="orderId", event_key=None) == {"orderId": "od_1"}
    with pytest.raises(ValueError):
        zaprite.webhook_body("od_1", shape="data")  # type: ignore[arg-type]


async def test_post_webhook_through_a_given_asgi_client(zaprite: FakeZaprite) -> None:
    hook = Receiver()
    transport = httpx.ASGITransport(app=hook.app)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await zaprite.post_webhook(
            "http://keysat.test/hook", order_id="od_1", shape="id", client=client
        )
    assert response.status_code == 202
    assert json.loads(hook.deliveries[0][1]) == {"event": "order.paid", "id": "od_1"}
    assert hook.deliveries[0][0]["host"] == "keysat.test"


def test_webhook_through_the_control_path(
    zaprite: FakeZaprite, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    response = httpx.post(
        f"{zaprite.url}/_fake/webhook",
        json={"url": url, "orderId": "od_9", "shape": "data.object.id", "eventKey": "type"},
    )
    assert response.json() == {"status": 202, "body": '{"received":true}'}
    assert json.loads(hook.deliveries[0][1]) == {
        "type": "order.paid",
        "data": {"object": {"id": "od_9"}},
    }
    unreachable = httpx.post(
        f"{zaprite.url}/_fake/webhook", json={"url": "http://127.0.0.1:1/hook", "orderId": "x"}
    )
    assert unreachable.status_code == 502
    assert unreachable.json()["code"] == "BAD_GATEWAY"
