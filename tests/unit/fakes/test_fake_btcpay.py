"""The fake BTCPay Server: Keysat's Greenfield calls (payments.md 4.2) answered as BTCPay
does and valid against BTCPay's OpenAPI document, its auth checks, and its test controls."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fakes.base import RecordedRequest, ThreadedServer
from fakes.btcpay import (
    CAN_CREATE_INVOICE,
    CAN_MODIFY_STORE_SETTINGS,
    CAN_VIEW_INVOICES,
    CAN_VIEW_STORE_SETTINGS,
    DEFAULT_RECEIVE_ADDRESS,
    INVOICE_STATUSES,
    KEYSAT_PERMISSIONS,
    FakeBTCPay,
)
from fakes.openapi_check import validate_exchange, validate_webhook_body

KEYSAT_EVENTS = ["InvoiceSettled", "InvoiceExpired", "InvoiceInvalid"]
BOLT11 = "lnbcrt500u1pjfakeinvoicefortipsxyz"
WEBHOOK_SECRET = "KEYSATWEBHOOKSECRET234567ABCDEF"
SIGNATURE = re.compile(r"^sha256=[0-9a-f]{64}$")


def invoice_body(**checkout: Any) -> dict[str, Any]:
    """The create-invoice body Keysat sends for a 50 000-sat purchase."""
    return {
        "amount": "0.00050000",
        "currency": "BTC",
        "metadata": {
            "productId": "prod-1",
            "orderId": "6f1c2a8e-1d2b-4c3d-9e4f-5a6b7c8d9e0f",
            "source": "keysat",
        },
        "checkout": {
            "redirectURL": "https://keysat.example/thanks",
            "redirectAutomatically": True,
            **checkout,
        },
    }


def webhook_body(url: str, secret: str | None = None) -> dict[str, Any]:
    """The register-webhook body Keysat sends when connecting."""
    return {
        "url": url,
        "enabled": True,
        "automaticRedelivery": True,
        "secret": WEBHOOK_SECRET if secret is None else secret,
        "authorizedEvents": {"everything": False, "specificEvents": KEYSAT_EVENTS},
    }


def assert_exchanges_valid(fake: FakeBTCPay) -> None:
    assert fake.api_requests(), "nothing was recorded"
    problems = [p for recorded in fake.requests for p in validate_exchange(recorded)]
    assert problems == []


class Receiver:
    """A webhook endpoint that keeps the exact bytes and headers it received."""

    def __init__(self) -> None:
        self.received: list[RecordedRequest] = []
        self.app = Starlette(routes=[Route("/hook/{name}", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        self.received.append(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                headers=dict(request.headers),
                body=await request.body(),
            )
        )
        return Response(status_code=200)


@pytest.fixture
def fake() -> Iterator[FakeBTCPay]:
    with FakeBTCPay() as running:
        yield running


@pytest.fixture
async def client(fake: FakeBTCPay) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"token {fake.api_key}"}
    async with httpx.AsyncClient(base_url=fake.url, headers=headers, timeout=5) as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    target = Receiver()
    server = ThreadedServer(target.app).start()
    try:
        yield target, server.url
    finally:
        server.stop()


async def create_invoice(client: httpx.AsyncClient, fake: FakeBTCPay) -> dict[str, Any]:
    response = await client.post(f"/api/v1/stores/{fake.store_id}/invoices", json=invoice_body())
    assert response.status_code == 200, response.text
    return dict(response.json())


async def register_webhook(
    client: httpx.AsyncClient, fake: FakeBTCPay, url: str, secret: str | None = None
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/stores/{fake.store_id}/webhooks", json=webhook_body(url, secret)
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


# -- Keysat's calls ------------------------------------------------------------------------


def test_defaults(fake: FakeBTCPay) -> None:
    assert len(fake.store_id) == 44
    assert re.fullmatch(r"[0-9a-f]{40}", fake.api_key)
    assert fake.url.startswith("http://127.0.0.1:") and not fake.url.endswith("/")
    assert sorted(fake.api_keys[fake.api_key]) == sorted(
        f"{p}:{fake.store_id}" for p in KEYSAT_PERMISSIONS
    )


async def test_create_and_read_invoice(fake: FakeBTCPay, client: httpx.AsyncClient) -> None:
    created = await create_invoice(client, fake)

    assert created["checkoutLink"] == f"{fake.url}/i/{created['id']}"
    assert created["status"] == "New"
    assert (created["amount"], created["currency"]) == ("0.00050000", "BTC")
    assert created["metadata"] == invoice_body()["metadata"]
    assert created["storeId"] == fake.store_id
    assert created["checkout"]["redirectURL"] == "https://keysat.example/thanks"
    assert created["checkout"]["redirectAutomatically"] is True
    assert created["expirationTime"] - created["createdTime"] == 15 * 60
    assert fake.invoices[created["id"]].status == "New"

    scoped = await client.get(f"/api/v1/stores/{fake.store_id}/invoices/{created['id']}")
    storeless = await client.get(f"/api/v1/invoices/{created['id']}")
    assert scoped.status_code == storeless.status_code == 200
    assert scoped.json() == storeless.json() == created
    page = await client.get(f"/i/{created['id']}")
    assert page.status_code == 200 and created["id"] in page.text
    assert_exchanges_valid(fake)


async def test_expiration_minutes_sets_expiry(fake: FakeBTCPay, client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/api/v1/stores/{fake.store_id}/invoices", json=invoice_body(expirationMinutes=90)
    )
    invoice = response.json()
    assert invoice["expirationTime"] - invoice["createdTime"] == 90 * 60
    assert invoice["checkout"]["expirationMinutes"] == 90
    assert_exchanges_valid(fake)


async def test_connect_calls(
    fake: FakeBTCPay, client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    stores = await client.get("/api/v1/stores")
    assert stores.status_code == 200
    assert [(s["id"], s["name"]) for s in stores.json()] == [(fake.store_id, "Keysat test store")]

    url = f"{receiver[1]}/hook/provider-1"
    webhook = await register_webhook(client, fake, url)
    assert webhook["secret"] == WEBHOOK_SECRET
    assert webhook["url"] == url and webhook["enabled"] is True
    assert webhook["authorizedEvents"] == {"everything": False, "specificEvents": KEYSAT_EVENTS}
    [registered] = fake.webhooks
    assert (registered.id, registered.url, registered.secret) == (
        webhook["id"],
        url,
        webhook["secret"],
    )

    methods = await client.get(f"/api/v1/stores/{fake.store_id}/payment-methods")
    assert [(m["paymentMethodId"], m["enabled"]) for m in methods.json()] == [
        ("BTC-CHAIN", True),
        ("BTC-LN", True),
    ]
    address = await client.get(
        f"/api/v1/stores/{fake.store_id}/payment-methods/BTC-CHAIN/wallet/address"
    )
    assert address.status_code == 200
    assert address.json()["address"] == DEFAULT_RECEIVE_ADDRESS
    assert DEFAULT_RECEIVE_ADDRESS.startswith("bcrt1")
    assert_exchanges_valid(fake)


async def test_webhook_without_secret_gets_one(fake: FakeBTCPay, client: httpx.AsyncClient) -> None:
    body = webhook_body("https://keysat.example/v1/btcpay/webhook/x")
    del body["secret"]
    response = await client.post(f"/api/v1/stores/{fake.store_id}/webhooks", json=body)
    assert response.status_code == 200
    assert response.json()["secret"] and response.json()["secret"] == fake.webhooks[0].secret
    assert_exchanges_valid(fake)


async def test_disconnect_calls(fake: FakeBTCPay, client: httpx.AsyncClient) -> None:
    first = await register_webhook(client, fake, "https://keysat.example/v1/btcpay/webhook/1")
    second = await register_webhook(client, fake, "https://keysat.example/v1/btcpay/webhook/2")

    scoped = f"/api/v1/stores/{fake.store_id}/webhooks/{first['id']}"
    assert (await client.delete(scoped)).status_code == 200
    again = await client.delete(scoped)
    assert again.status_code == 404 and again.json()["code"] == "webhook-not-found"
    assert (await client.delete(f"/api/v1/webhooks/{second['id']}")).status_code == 200
    assert (await client.delete(f"/api/v1/webhooks/{second['id']}")).status_code == 404
    assert fake.webhooks == []

    revoked = await client.delete("/api/v1/api-keys/current")
    assert revoked.status_code == 200 and revoked.content == b""
    assert fake.api_key not in fake.api_keys
    after = await client.get("/api/v1/stores")
    assert after.status_code == 401
    assert_exchanges_valid(fake)


async def test_lightning_pay(fake: FakeBTCPay, client: httpx.AsyncClient) -> None:
    paid = await client.post(
        f"/api/v1/stores/{fake.store_id}/lightning/BTC/invoices/pay", json={"BOLT11": BOLT11}
    )
    assert paid.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{64}", paid.json()["paymentHash"])
    assert paid.json()["BOLT11"] == BOLT11
    assert fake.lightning_payments == [BOLT11]

    bad = await client.post(
        f"/api/v1/stores/{fake.store_id}/lightning/BTC/invoices/pay", json={"BOLT11": "nope"}
    )
    assert bad.status_code == 422 and bad.json()[0]["path"] == "BOLT11"
    assert fake.lightning_payments == [BOLT11]
    assert_exchanges_valid(fake)


async def test_lightning_pay_needs_a_lightning_method(
    fake: FakeBTCPay, client: httpx.AsyncClient
) -> None:
    fake.set_payment_methods([{"paymentMethodId": "BTC-CHAIN", "enabled": True}])
    paid = await client.post(
        f"/api/v1/stores/{fake.store_id}/lightning/BTC/invoices/pay", json={"BOLT11": BOLT11}
    )
    assert paid.status_code == 404
    assert fake.lightning_payments == []
    assert_exchanges_valid(fake)


async def test_unknown_invoice_and_bad_input(fake: FakeBTCPay, client: httpx.AsyncClient) -> None:
    missing = await client.get(f"/api/v1/stores/{fake.store_id}/invoices/nosuchinvoice")
    assert missing.status_code == 404
    assert missing.json() == {"code": "invoice-not-found", "message": "The invoice was not found"}
    assert (await client.get("/api/v1/invoices/nosuchinvoice")).status_code == 404

    bad_amount = await client.post(
        f"/api/v1/stores/{fake.store_id}/invoices", json={"amount": "lots", "currency": "BTC"}
    )
    assert bad_amount.status_code == 422 and bad_amount.json()[0]["path"] == "amount"
    bad_url = await client.post(
        f"/api/v1/stores/{fake.store_id}/webhooks", json=webhook_body("not a url")
    )
    assert bad_url.status_code == 422
    assert bad_url.json() == [{"path": "url", "message": "Invalid Url"}]
    assert fake.invoices == {} and fake.webhooks == []
    assert_exchanges_valid(fake)


# -- authentication and permissions --------------------------------------------------------


async def test_wrong_or_missing_key_is_401(fake: FakeBTCPay, client: httpx.AsyncClient) -> None:
    path = f"/api/v1/stores/{fake.store_id}/invoices"
    wrong = await client.post(path, json=invoice_body(), headers={"Authorization": "token nope"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "unauthenticated"
    bearer = await client.get("/api/v1/stores", headers={"Authorization": f"Bearer {fake.api_key}"})
    assert bearer.status_code == 401
    async with httpx.AsyncClient(base_url=fake.url) as anonymous:
        assert (await anonymous.get("/api/v1/stores")).status_code == 401
    assert fake.invoices == {}
    # The checker flags the two requests that carried no `token` header, and nothing else.
    problems = [p for recorded in fake.requests for p in validate_exchange(recorded)]
    assert problems == ["GET /api/v1/stores: request: no `Authorization: token <key>` header"] * 2


async def test_key_lacking_permission_is_403(fake: FakeBTCPay, client: httpx.AsyncClient) -> None:
    created = await create_invoice(client, fake)
    fake.add_api_key("viewer", [f"{CAN_VIEW_INVOICES}:{fake.store_id}"])
    viewer = {"Authorization": "token viewer"}

    read = await client.get(f"/api/v1/invoices/{created['id']}", headers=viewer)
    assert read.status_code == 200
    create = await client.post(
        f"/api/v1/stores/{fake.store_id}/invoices", json=invoice_body(), headers=viewer
    )
    assert create.status_code == 403
    assert create.json()["code"] == "missing-permission"
    assert create.json()["missingPermission"] == CAN_CREATE_INVOICE
    for path in (
        "/api/v1/stores",
        f"/api/v1/stores/{fake.store_id}/payment-methods",
        f"/api/v1/stores/{fake.store_id}/payment-methods/BTC-CHAIN/wallet/address",
    ):
        assert (await client.get(path, headers=viewer)).status_code == 403, path
    hook = await client.post(
        f"/api/v1/stores/{fake.store_id}/webhooks",
        json=webhook_body("https://keysat.example/hook"),
        headers=viewer,
    )
    assert hook.status_code == 403
    assert len(fake.invoices) == 1 and fake.webhooks == []
    assert_exchanges_valid(fake)


async def test_permissions_are_per_store(fake: FakeBTCPay, client: httpx.AsyncClient) -> None:
    fake.add_store("OtherStore", "Other")
    elsewhere = await client.post("/api/v1/stores/OtherStore/invoices", json=invoice_body())
    assert elsewhere.status_code == 403
    unknown = await client.post("/api/v1/stores/NoSuchStore/invoices", json=invoice_body())
    assert unknown.status_code == 403

    fake.add_api_key("everywhere", [CAN_CREATE_INVOICE, CAN_VIEW_STORE_SETTINGS])
    anywhere = {"Authorization": "token everywhere"}
    created = await client.post(
        "/api/v1/stores/OtherStore/invoices", json=invoice_body(), headers=anywhere
    )
    assert created.status_code == 200
    listed = await client.get("/api/v1/stores", headers=anywhere)
    assert {s["id"] for s in listed.json()} == {fake.store_id, "OtherStore"}
    own = await client.get("/api/v1/stores")
    assert [s["id"] for s in own.json()] == [fake.store_id]
    assert_exchanges_valid(fake)


async def test_modify_store_settings_includes_webhooks_and_lightning(
    fake: FakeBTCPay, client: httpx.AsyncClient
) -> None:
    fake.add_api_key("admin", [f"{CAN_MODIFY_STORE_SETTINGS}:{fake.store_id}"])
    admin = {"Authorization": "token admin"}
    hook = await client.post(
        f"/api/v1/stores/{fake.store_id}/webhooks",
        json=webhook_body("https://keysat.example/hook"),
        headers=admin,
    )
    assert hook.status_code == 200
    paid = await client.post(
        f"/api/v1/stores/{fake.store_id}/lightning/BTC/invoices/pay",
        json={"BOLT11": BOLT11},
        headers=admin,
    )
    assert paid.status_code == 200
    assert_exchanges_valid(fake)


# -- controls ------------------------------------------------------------------------------


async def test_fail_next_with_status(fake: FakeBTCPay, client: httpx.AsyncClient) -> None:
    created = await create_invoice(client, fake)
    path = f"/api/v1/stores/{fake.store_id}/invoices/{created['id']}"
    fake.fail_next("GET", r"/invoices/", count=2, status=503)

    statuses = [(await client.get(path)).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert [r.extra.get("injected", False) for r in fake.api_requests("GET")] == [
        True,
        True,
        False,
    ]
    assert_exchanges_valid(fake)


async def test_fail_next_only_matching_method_and_path(
    fake: FakeBTCPay, client: httpx.AsyncClient
) -> None:
    fake.fail_next("POST", r"/webhooks$")
    assert (await client.get("/api/v1/stores")).status_code == 200
    assert (await create_invoice(client, fake))["status"] == "New"
    hook = await client.post(
        f"/api/v1/stores/{fake.store_id}/webhooks", json=webhook_body("https://keysat.example/h")
    )
    assert hook.status_code == 500
    assert fake.webhooks == []


async def test_fail_next_hang(fake: FakeBTCPay, client: httpx.AsyncClient) -> None:
    fake.fail_next("GET", r"^/api/v1/stores$", hang_seconds=2.0)
    with pytest.raises(httpx.ReadTimeout):
        await client.get("/api/v1/stores", timeout=0.3)
    assert (await client.get("/api/v1/stores")).status_code == 200


@pytest.mark.parametrize("status", INVOICE_STATUSES)
async def test_set_invoice_status_changes_the_read(
    fake: FakeBTCPay, client: httpx.AsyncClient, status: str
) -> None:
    created = await create_invoice(client, fake)
    fake.set_invoice_status(created["id"], status)
    read = await client.get(f"/api/v1/stores/{fake.store_id}/invoices/{created['id']}")
    assert read.json()["status"] == status
    assert fake.invoices[created["id"]].status == status
    assert_exchanges_valid(fake)


async def test_set_invoice_amount(fake: FakeBTCPay, client: httpx.AsyncClient) -> None:
    created = await create_invoice(client, fake)
    fake.set_invoice_amount(created["id"], "0.00000001")
    read = await client.get(f"/api/v1/stores/{fake.store_id}/invoices/{created['id']}")
    assert (read.json()["amount"], read.json()["currency"]) == ("0.00000001", "BTC")
    fake.set_invoice_amount(created["id"], "12.50", currency="USD")
    read = await client.get(f"/api/v1/invoices/{created['id']}")
    assert (read.json()["amount"], read.json()["currency"]) == ("12.50", "USD")
    with pytest.raises(ValueError):
        fake.set_invoice_status(created["id"], "Complete")
    with pytest.raises(KeyError):
        fake.set_invoice_amount("nosuchinvoice", "1")
    assert_exchanges_valid(fake)


@pytest.mark.parametrize(
    ("address", "prefix"),
    [("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "tb1"), ("bc1qexampleaddress", "bc1")],
)
async def test_receive_address_is_a_control(
    fake: FakeBTCPay, client: httpx.AsyncClient, address: str, prefix: str
) -> None:
    fake.set_receive_address(address)
    path = f"/api/v1/stores/{fake.store_id}/payment-methods/BTC-CHAIN/wallet/address"
    answer = await client.get(path)
    assert answer.json()["address"] == address and address.startswith(prefix)
    assert_exchanges_valid(fake)


async def test_payment_methods_control_and_legacy_ids(
    fake: FakeBTCPay, client: httpx.AsyncClient
) -> None:
    fake.set_payment_methods(
        [
            {"paymentMethodId": "BTC", "enabled": True},
            {"paymentMethodId": "BTC-LightningNetwork", "enabled": False},
        ]
    )
    base = f"/api/v1/stores/{fake.store_id}/payment-methods"
    listed = await client.get(base)
    assert [m["paymentMethodId"] for m in listed.json()] == ["BTC", "BTC-LightningNetwork"]
    enabled = await client.get(base, params={"onlyEnabled": "true"})
    assert [m["paymentMethodId"] for m in enabled.json()] == ["BTC"]
    assert (await client.get(f"{base}/BTC/wallet/address")).status_code == 200
    assert (await client.get(f"{base}/BTC-CHAIN/wallet/address")).status_code == 404
    assert_exchanges_valid(fake)


async def test_authorize_returns_consent_form_fields(
    fake: FakeBTCPay, client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    fields = fake.authorize(KEYSAT_PERMISSIONS)

    assert set(fields) == {"apiKey", "userId", "permissions[]"}
    assert fields["userId"] == fake.user_id
    assert fields["permissions[]"] == [f"{p}:{fake.store_id}" for p in KEYSAT_PERMISSIONS]
    assert fake.api_keys[fields["apiKey"]] == fields["permissions[]"]
    minted = {"Authorization": f"token {fields['apiKey']}"}
    stores = await client.get("/api/v1/stores", headers=minted)
    assert [s["id"] for s in stores.json()] == [fake.store_id]

    # Posted as BTCPay's consent page does: a form with repeated permissions[].
    target, url = receiver
    async with httpx.AsyncClient() as browser:
        await browser.post(f"{url}/hook/callback", data=fields)
    form = parse_qs(target.received[0].body.decode())
    assert form["permissions[]"] == fields["permissions[]"]
    assert form["apiKey"] == [fields["apiKey"]]
    assert_exchanges_valid(fake)


def test_authorize_for_several_or_no_stores(fake: FakeBTCPay) -> None:
    fake.add_store("SecondStore", "Second")
    both = fake.authorize([CAN_VIEW_INVOICES], [fake.store_id, "SecondStore"])
    assert both["permissions[]"] == [
        f"{CAN_VIEW_INVOICES}:{fake.store_id}",
        f"{CAN_VIEW_INVOICES}:SecondStore",
    ]
    unscoped = fake.authorize([CAN_VIEW_INVOICES, "btcpay.user.canviewprofile"], [])
    assert unscoped["permissions[]"] == [CAN_VIEW_INVOICES, "btcpay.user.canviewprofile"]
    with pytest.raises(ValueError):
        fake.authorize([CAN_VIEW_INVOICES], ["NoSuchStore"])


# -- webhook delivery ----------------------------------------------------------------------


def expected_signature(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


async def test_deliver_webhook_signs_the_exact_bytes(
    fake: FakeBTCPay, client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    target, url = receiver
    created = await create_invoice(client, fake)
    webhook = await register_webhook(client, fake, f"{url}/hook/provider-1")

    answer = await fake.deliver_webhook(created["id"])

    assert answer.status_code == 200
    [got] = target.received
    assert got.path == "/hook/provider-1"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["btcpay-sig"] == expected_signature(webhook["secret"], got.body)
    body = json.loads(got.body)
    assert body["type"] == "InvoiceSettled"
    assert body["invoiceId"] == created["id"] and body["storeId"] == fake.store_id
    assert body["webhookId"] == webhook["id"]
    assert body["deliveryId"] == body["originalDeliveryId"] and body["isRedelivery"] is False
    assert body["metadata"]["orderId"] == invoice_body()["metadata"]["orderId"]
    assert (body["manuallyMarked"], body["overPaid"]) == (False, False)
    # Indented like BTCPay's: re-serializing before verifying would break the signature.
    assert got.body != json.dumps(body).encode()
    assert validate_webhook_body("InvoiceSettled", got.body) == []


async def test_bad_and_missing_signature(
    fake: FakeBTCPay, client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    target, url = receiver
    created = await create_invoice(client, fake)
    webhook = await register_webhook(client, fake, f"{url}/hook/p")

    await fake.deliver_webhook(created["id"], bad_signature=True)
    await fake.deliver_webhook(created["id"], omit_signature=True)

    bad, unsigned = target.received
    assert SIGNATURE.match(bad.headers["btcpay-sig"])
    assert bad.headers["btcpay-sig"] != expected_signature(webhook["secret"], bad.body)
    assert "btcpay-sig" not in unsigned.headers


@pytest.mark.parametrize(
    "event_type",
    [
        "InvoiceSettled",
        "InvoiceExpired",
        "InvoiceInvalid",
        "InvoiceProcessing",
        "InvoiceCreated",
        "InvoiceReceivedPayment",
        "InvoicePaymentSettled",
    ],
)
async def test_event_bodies_match_the_document(
    fake: FakeBTCPay,
    client: httpx.AsyncClient,
    receiver: tuple[Receiver, str],
    event_type: str,
) -> None:
    target, url = receiver
    created = await create_invoice(client, fake)
    await register_webhook(client, fake, f"{url}/hook/p")
    await fake.deliver_webhook(created["id"], event_type)
    assert validate_webhook_body(event_type, target.received[0].body) == []


async def test_overrides_webhook_choice_and_asgi_client(
    fake: FakeBTCPay, client: httpx.AsyncClient
) -> None:
    target = Receiver()
    created = await create_invoice(client, fake)
    old = await register_webhook(client, fake, "http://keysat.test/hook/old")
    new = await register_webhook(client, fake, "http://keysat.test/hook/new", "another-secret")
    transport = httpx.ASGITransport(app=target.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keysat.test") as app:
        await fake.deliver_webhook(created["id"], client=app)
        await fake.deliver_webhook(
            created["id"],
            "InvoiceExpired",
            webhook_id=old["id"],
            client=app,
            body_overrides={"storeId": "SomeOtherStore", "metadata": {"note": "Zoë"}},
        )

    newest, chosen = target.received
    assert newest.path == "/hook/new" and json.loads(newest.body)["webhookId"] == new["id"]
    assert newest.headers["btcpay-sig"] == expected_signature("another-secret", newest.body)
    assert chosen.path == "/hook/old"
    assert chosen.headers["btcpay-sig"] == expected_signature(WEBHOOK_SECRET, chosen.body)
    # Non-ASCII goes out as UTF-8, unescaped, and the signature covers those bytes.
    assert "Zoë".encode() in chosen.body
    body = json.loads(chosen.body)
    assert (body["type"], body["storeId"], body["metadata"]) == (
        "InvoiceExpired",
        "SomeOtherStore",
        {"note": "Zoë"},
    )


async def test_deliver_needs_a_webhook(fake: FakeBTCPay, client: httpx.AsyncClient) -> None:
    created = await create_invoice(client, fake)
    with pytest.raises(LookupError):
        await fake.deliver_webhook(created["id"])
    with pytest.raises(KeyError):
        await fake.deliver_webhook("nosuchinvoice")


def test_deliver_webhook_sync(fake: FakeBTCPay, receiver: tuple[Receiver, str]) -> None:
    target, url = receiver
    headers = {"Authorization": f"token {fake.api_key}"}
    with httpx.Client(base_url=fake.url, headers=headers) as sync:
        created = sync.post(f"/api/v1/stores/{fake.store_id}/invoices", json=invoice_body())
        hook = sync.post(
            f"/api/v1/stores/{fake.store_id}/webhooks", json=webhook_body(f"{url}/hook/s")
        )
    answer = fake.deliver_webhook_sync(created.json()["id"], "InvoiceInvalid")
    assert answer.status_code == 200
    [got] = target.received
    assert got.headers["btcpay-sig"] == expected_signature(hook.json()["secret"], got.body)
    assert json.loads(got.body)["type"] == "InvoiceInvalid"


# -- HTTP controls -------------------------------------------------------------------------


async def test_http_controls(
    fake: FakeBTCPay, client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    target, url = receiver
    created = await create_invoice(client, fake)
    webhook = await register_webhook(client, fake, f"{url}/hook/p")
    invoice_path = f"/api/v1/stores/{fake.store_id}/invoices/{created['id']}"

    status_path = f"/invoices/{created['id']}/status"

    async with httpx.AsyncClient(base_url=f"{fake.url}/_fake") as control:
        state = (await control.get("/state")).json()
        assert (state["store_id"], state["api_key"]) == (fake.store_id, fake.api_key)
        settled = await control.post(status_path, json={"status": "Settled"})
        unknown = await control.post("/invoices/nope/status", json={"status": "Settled"})
        invalid = await control.post(status_path, json={"status": "Paid"})
        assert (settled.status_code, unknown.status_code, invalid.status_code) == (200, 404, 400)
        await control.post(f"/invoices/{created['id']}/amount", json={"amount": "0.0000007"})
        await control.put("/receive-address", json={"address": "tb1qtestnet"})
        await control.put("/payment-methods", json=[{"paymentMethodId": "BTC", "enabled": True}])
        await control.post("/stores", json={"store_id": "ViaHttp", "name": "Via HTTP"})
        await control.post("/api-keys", json={"key": "httpkey", "permissions": [CAN_VIEW_INVOICES]})
        fields = (
            await control.post("/authorize", json={"permissions": [CAN_VIEW_INVOICES]})
        ).json()
        await control.post("/fail-next", json={"method": "GET", "path_regex": "/invoices/"})
        delivered = await control.post(
            "/webhooks/deliver", json={"invoice_id": created["id"], "event_type": "InvoiceSettled"}
        )
        recorded = (await control.get("/requests")).json()

    assert delivered.json() == {"status": 200, "body": ""}
    [got] = target.received
    assert got.headers["btcpay-sig"] == expected_signature(webhook["secret"], got.body)
    assert (await client.get(invoice_path)).status_code == 500
    read = (await client.get(invoice_path)).json()
    assert (read["status"], read["amount"]) == ("Settled", "0.0000007")
    assert fake.stores["ViaHttp"] == "Via HTTP"
    assert fake.api_keys["httpkey"] == [CAN_VIEW_INVOICES]
    assert fields["permissions[]"] == [f"{CAN_VIEW_INVOICES}:{fake.store_id}"]
    assert [m["paymentMethodId"] for m in state["payment_methods"]] == ["BTC-CHAIN", "BTC-LN"]
    address = await client.get(f"/api/v1/stores/{fake.store_id}/payment-methods/BTC/wallet/address")
    assert address.json()["address"] == "tb1qtestnet"
    assert any(r["path"] == f"/api/v1/stores/{fake.store_id}/invoices" for r in recorded)
    assert_exchanges_valid(fake)


# -- the checker itself --------------------------------------------------------------------


def recorded_create(body: dict[str, Any], response: dict[str, Any], **headers: str) -> Any:
    return RecordedRequest(
        method="POST",
        path="/api/v1/stores/S/invoices",
        query="",
        headers={"content-type": "application/json", **headers},
        body=json.dumps(body).encode(),
        status=200,
        response_body=json.dumps(response).encode(),
    )


def test_checker_reports_bad_requests_and_responses() -> None:
    good_answer = {"id": "x", "status": "New", "amount": "1", "checkoutLink": "http://x/i/x"}
    auth = {"authorization": "token k"}
    assert validate_exchange(recorded_create(invoice_body(), good_answer, **auth)) == []

    unknown_field = validate_exchange(
        recorded_create(invoice_body(colour="blue"), good_answer, **auth)
    )
    assert len(unknown_field) == 1 and "$.checkout" in unknown_field[0]
    assert "colour" in unknown_field[0]
    no_auth = validate_exchange(recorded_create(invoice_body(), good_answer))
    assert len(no_auth) == 1 and "Authorization" in no_auth[0]
    bad_answer = validate_exchange(
        recorded_create(invoice_body(), {**good_answer, "status": "Paid", "amount": 1}, **auth)
    )
    assert len(bad_answer) == 2
    assert any("$.status" in p for p in bad_answer) and any("$.amount" in p for p in bad_answer)


def test_checker_knows_which_paths_it_covers() -> None:
    unknown = RecordedRequest("GET", "/api/v1/nothing-here", "", {}, b"", 200, b"{}")
    assert validate_exchange(unknown) == [
        "no operation GET /api/v1/nothing-here in the OpenAPI document"
    ]
    control = RecordedRequest("POST", "/_fake/anything", "", {}, b"x", 200, b"x")
    assert validate_exchange(control) == []


def test_checker_reports_bad_webhook_bodies() -> None:
    assert validate_webhook_body("InvoiceSettled", {"type": "InvoiceSettled"}) == []
    problems = validate_webhook_body(
        "InvoiceSettled", {"type": "InvoiceExpired", "overPaid": "no", "extra": 1}
    )
    assert len(problems) == 3
    assert validate_webhook_body("NoSuchEvent", {}) == [
        "no webhook payload schema for event type 'NoSuchEvent'"
    ]
