"""Connecting BTCPay Server: the one-click authorize flow, network detection and the
sandbox gate, disconnect, status and payment methods, and the headless seed from the
environment (payments.md 4.6-4.9; admin-api.md 10-11; config.md 3.5)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fakes.btcpay import KEYSAT_PERMISSIONS, FakeBTCPay
from fakes.zaprite import FakeZaprite
from keysat.billing.models import Invoice
from keysat.clock import clock
from keysat.db import Database
from keysat.operator.models import MerchantProfile
from keysat.operator.service import default_profile
from keysat.payments.connect import seed_btcpay_from_environment
from keysat.payments.models import BTCPayAuthorizeState, PaymentProvider, RailPreference
from keysat.subscriptions.models import Subscription
from keysat.web.pages import CSP
from keysat.wire import new_id
from support import (
    assert_error,
    audit_rows,
    connect_btcpay_row,
    connect_zaprite_row,
    create_product,
    invoice_row,
    licenses_for_invoice,
    purchase,
)

CONNECT = "/v1/admin/btcpay/connect"
DISCONNECT = "/v1/admin/btcpay/disconnect"
STATE = re.compile(r"^[A-Z2-7]{32}$")
SECRET = re.compile(r"^[A-Z2-7]{52}$")
REGTEST = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
TESTNET = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"
MAINNET = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
EVENTS = ["InvoiceSettled", "InvoiceExpired", "InvoiceInvalid"]


# --- helpers -------------------------------------------------------------------------------


async def btcpay_server(make_server: Callable[..., Any], fake: FakeBTCPay, **env: str) -> Any:
    return await make_server(BTCPAY_URL=fake.url, **env)


async def start(server: Any, **body: Any) -> dict[str, Any]:
    response = await server.admin_post(CONNECT, body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def callback_url(started: dict[str, Any]) -> str:
    """Where BTCPay sends the operator back: the `redirect` of the authorize URL."""
    query = parse_qs(urlsplit(started["authorize_url"]).query)
    [redirect] = query["redirect"]
    return redirect


async def get_callback(server: Any, started: dict[str, Any], **params: Any) -> httpx.Response:
    """BTCPay redirecting the browser back with query parameters (GET)."""
    return await server.client.get(
        "/v1/btcpay/authorize/callback", params={"state": started["state"], **params}
    )


async def consent(
    server: Any,
    fake: FakeBTCPay,
    started: dict[str, Any],
    store_ids: list[str] | None = None,
) -> tuple[httpx.Response, dict[str, Any]]:
    """BTCPay's consent page approving the five permissions and posting the form back."""
    fields = fake.authorize(KEYSAT_PERMISSIONS, store_ids)
    response = await server.client.post(callback_url(started), data=fields)
    return response, fields


async def connect(server: Any, fake: FakeBTCPay, **body: Any) -> PaymentProvider:
    started = await start(server, **body)
    response, _ = await consent(server, fake, started)
    assert response.status_code == 200, response.text
    [row] = await btcpay_rows(server)
    return row


async def btcpay_rows(server: Any) -> list[PaymentProvider]:
    async with server.state.db.read() as session:
        query = sa.select(PaymentProvider).where(PaymentProvider.kind == "btcpay")
        return list((await session.execute(query)).scalars())


async def states(server: Any) -> list[BTCPayAuthorizeState]:
    async with server.state.db.read() as session:
        return list((await session.execute(sa.select(BTCPayAuthorizeState))).scalars())


async def the_default_profile(server: Any) -> MerchantProfile:
    async with server.state.db.read() as session:
        return await default_profile(session)


async def add_profile(server: Any, name: str) -> str:
    profile_id = new_id()
    at = clock.now()
    async with server.state.db.write() as session:
        session.add(
            MerchantProfile(
                id=profile_id, name=name, is_default=False, created_at=at, updated_at=at
            )
        )
    return profile_id


def assert_html(response: httpx.Response, status: int, *texts: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == CSP
    for text in texts:
        assert text in response.text


def expected_authorize_url(base: str, state: str) -> str:
    callback = f"http://keysat.test/v1/btcpay/authorize/callback?state={state}"
    return (
        f"{base}/api-keys/authorize?applicationName=Keysat&applicationIdentifier=keysat"
        f"&strict=true&selectiveStores=true&redirect={quote(callback, safe='')}"
        "&permissions=btcpay.store.canviewstoresettings"
        "&permissions=btcpay.store.canmodifystoresettings"
        "&permissions=btcpay.store.canviewinvoices"
        "&permissions=btcpay.store.cancreateinvoice"
        "&permissions=btcpay.store.canmodifyinvoices"
    )


class NoStoreBTCPay(FakeBTCPay):
    """A BTCPay user with no store at all: the store list is empty."""

    async def _list_stores(self, request: Request) -> Response:
        denied = self._deny(request, None, None)
        if denied is not None:
            return denied
        return JSONResponse([])


class OwnSecretBTCPay(FakeBTCPay):
    """A BTCPay that keeps its own webhook secret and answers with it."""

    chosen_secret = "BTCPAYCHOSENTHISSECRET"

    async def _create_webhook(self, request: Request) -> Response:
        response = await super()._create_webhook(request)
        if response.status_code != 200:
            return response
        data = json.loads(bytes(response.body))
        with self._lock:
            self._webhooks[data["id"]].secret = self.chosen_secret
        return JSONResponse({**data, "secret": self.chosen_secret})


class SecretlessBTCPay(FakeBTCPay):
    """A BTCPay whose webhook answer carries no secret."""

    async def _create_webhook(self, request: Request) -> Response:
        response = await super()._create_webhook(request)
        data = json.loads(bytes(response.body))
        data.pop("secret", None)
        return JSONResponse(data, status_code=response.status_code)


@pytest.fixture
def no_store_btcpay() -> Iterator[FakeBTCPay]:
    with NoStoreBTCPay() as fake:
        yield fake


# --- starting the flow -----------------------------------------------------------------------


async def test_connect_without_btcpay_url_is_503(server: Any) -> None:
    response = await server.admin_post(CONNECT, {})
    assert_error(
        response,
        503,
        "btcpay_not_configured",
        "payment provider not configured: BTCPAY_URL is not set",
    )
    # BTCPAY_URL is checked before the profile.
    response = await server.admin_post(CONNECT, {"merchant_profile_id": new_id()})
    assert_error(response, 503, "btcpay_not_configured")
    assert await states(server) == []


async def test_connect_start_answers_the_authorize_url(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    profile = await the_default_profile(server)
    response = await server.client.post(CONNECT, headers={"Authorization": server_admin()})
    assert response.status_code == 200, response.text
    started = response.json()
    assert set(started) == {"authorize_url", "state", "merchant_profile_id"}
    assert STATE.match(started["state"])
    assert started["merchant_profile_id"] == profile.id
    assert started["authorize_url"] == expected_authorize_url(fake_btcpay.url, started["state"])

    [state] = await states(server)
    assert state.state_token == started["state"]
    assert state.merchant_profile_id == profile.id
    assert state.label == f"BTCPay — {profile.name}"
    assert state.scoped_initiator is False
    assert (state.initiator_actor_kind, state.initiator_actor_id) == ("admin_api_key", "master")
    assert state.initiator_actor_hash

    second = await start(server)
    assert second["state"] != started["state"]
    assert len(await states(server)) == 2
    # Starting writes no audit row and calls nothing at BTCPay.
    assert await audit_rows(server, "payment_provider.connect") == []
    assert fake_btcpay.api_requests() == []


def server_admin() -> str:
    from support import ADMIN

    return ADMIN["Authorization"]


async def test_browser_url_is_used_for_the_authorize_page_only(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(
        make_server, fake_btcpay, BTCPAY_BROWSER_URL="https://btcpay.example.com"
    )
    started = await start(server)
    assert started["authorize_url"] == expected_authorize_url(
        "https://btcpay.example.com", started["state"]
    )
    response, _ = await consent(server, fake_btcpay, started)
    assert response.status_code == 200, response.text
    [row] = await btcpay_rows(server)
    assert row.base_url == fake_btcpay.url


async def test_connect_start_for_another_profile(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    other = await add_profile(server, "Side shop")
    started = await start(server, merchant_profile_id=other)
    assert started["merchant_profile_id"] == other
    [state] = await states(server)
    assert (state.merchant_profile_id, state.label) == (other, "BTCPay — Side shop")
    response, _ = await consent(server, fake_btcpay, started)
    assert response.status_code == 200, response.text
    [row] = await btcpay_rows(server)
    assert (row.merchant_profile_id, row.label) == (other, "BTCPay — Side shop")


async def test_connect_start_unknown_profile_is_404(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    for profile_id in ("00000000-0000-4000-8000-000000000000", "no-such"):
        response = await server.admin_post(CONNECT, {"merchant_profile_id": profile_id})
        assert_error(response, 404, "not_found", f"not found: merchant profile '{profile_id}'")
    assert await states(server) == []


async def test_connect_start_when_the_profile_has_btcpay_is_409(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    await connect_btcpay_row(server, fake_btcpay)
    response = await server.admin_post(CONNECT, {})
    assert_error(response, 409, "conflict")
    assert await states(server) == []


async def connect_profile(server: Any, fake: FakeBTCPay, name: str, **body: Any) -> PaymentProvider:
    """A fresh profile connected through the whole flow; its provider row."""
    profile_id = await add_profile(server, name)
    started = await start(server, merchant_profile_id=profile_id, **body)
    response, _ = await consent(server, fake, started)
    assert response.status_code == 200, response.text
    [row] = [r for r in await btcpay_rows(server) if r.merchant_profile_id == profile_id]
    return row


async def test_connect_label_rules(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    for index, (label, stored) in enumerate(
        [
            ("  My node  ", "My node"),
            ("x" * 80, "x" * 80),
            ("  " + "y" * 80 + "  ", "y" * 80),
            ("   ", None),
            (None, None),
        ]
    ):
        row = await connect_profile(server, fake_btcpay, f"Shop {index}", label=label)
        assert row.label == (stored or f"BTCPay — Shop {index}")


async def test_connect_label_over_80_characters_is_400(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    response = await server.admin_post(CONNECT, {"label": "z" * 81})
    assert_error(response, 400, "bad_request")
    assert await states(server) == []


# --- the callback ----------------------------------------------------------------------------


async def test_one_click_connect_end_to_end(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    profile = await the_default_profile(server)
    started = await start(server, label="Main node")
    response, fields = await consent(server, fake_btcpay, started)

    assert_html(response, 200, "BTCPay connected", fake_btcpay.store_id, "regtest")
    [row] = await btcpay_rows(server)
    [webhook] = fake_btcpay.webhooks
    assert row.merchant_profile_id == profile.id
    assert row.label == "Main node"
    assert row.api_key == fields["apiKey"]
    assert row.base_url == fake_btcpay.url
    assert row.store_id == fake_btcpay.store_id
    assert row.webhook_id == webhook.id
    assert row.webhook_secret == webhook.secret
    assert row.network == "regtest"
    assert await states(server) == []

    assert webhook.url == f"http://keysat.test/v1/btcpay/webhook/{row.id}"
    assert webhook.enabled and webhook.automatic_redelivery
    assert webhook.authorized_events == {"everything": False, "specificEvents": EVENTS}
    [register] = fake_btcpay.api_requests("POST", "/webhooks$")
    assert register.path == f"/api/v1/stores/{fake_btcpay.store_id}/webhooks"
    assert register.headers["authorization"] == f"token {fields['apiKey']}"
    sent = register.json()
    assert SECRET.match(sent["secret"])
    assert sent == {
        "url": webhook.url,
        "enabled": True,
        "automaticRedelivery": True,
        "secret": sent["secret"],
        "authorizedEvents": {"everything": False, "specificEvents": EVENTS},
    }
    # Every BTCPay call used the new key; the network probe ran on the chosen store.
    calls = [(r.method, r.path) for r in fake_btcpay.api_requests()]
    store = f"/api/v1/stores/{fake_btcpay.store_id}"
    assert calls == [
        ("GET", "/api/v1/stores"),
        ("GET", f"{store}/payment-methods"),
        ("GET", f"{store}/payment-methods/BTC-CHAIN/wallet/address"),
        ("POST", f"{store}/webhooks"),
    ]

    [audit] = await audit_rows(server, "payment_provider.connect")
    assert (audit.actor_kind, audit.actor_id) == ("admin_api_key", "master")
    assert (audit.target_kind, audit.target_id) == ("payment_provider", row.id)
    assert audit.details == {
        "kind": "btcpay",
        "store_id": fake_btcpay.store_id,
        "merchant_profile_id": profile.id,
        "network": "regtest",
    }
    assert await audit_rows(server, "payment_provider.connect_scoped") == []

    status = await server.admin_get("/v1/admin/btcpay/status")
    assert status.json() == {
        "connected": True,
        "provider_id": row.id,
        "store_id": fake_btcpay.store_id,
        "webhook_id": webhook.id,
        "base_url": fake_btcpay.url,
        "label": "Main node",
        "merchant_profile_id": profile.id,
        "merchant_profile_name": profile.name,
    }

    # The stored key and secret work: a purchase settles through the registered webhook.
    await create_product(server, "acme", price_sats=5000)
    answer = await purchase(server, "acme")
    fake_btcpay.set_invoice_status(answer["btcpay_invoice_id"], "Settled")
    delivered = await fake_btcpay.deliver_webhook(answer["btcpay_invoice_id"], client=server.client)
    assert delivered.status_code == 200, delivered.text
    assert (await invoice_row(server, answer["invoice_id"])).status == "settled"
    assert len(await licenses_for_invoice(server, answer["invoice_id"])) == 1


async def test_the_permissions_field_name_without_brackets_is_accepted(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    other_store = "OtherStoreOtherStoreOtherStoreOtherStore1234"
    fake_btcpay.add_store(other_store, "Second store")
    started = await start(server)
    fields = fake_btcpay.authorize(KEYSAT_PERMISSIONS, [fake_btcpay.store_id, other_store])
    form = {
        "apiKey": fields["apiKey"],
        "userId": fields["userId"],
        "permissions": [p for p in fields["permissions[]"] if p.endswith(other_store)],
    }
    response = await server.client.post(callback_url(started), data=form)
    assert response.status_code == 200, response.text
    [row] = await btcpay_rows(server)
    assert row.store_id == other_store


async def test_state_is_single_use(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    started = await start(server)
    fields = fake_btcpay.authorize(KEYSAT_PERMISSIONS)
    first = await server.client.post(callback_url(started), data=fields)
    assert first.status_code == 200, first.text
    again = await server.client.post(callback_url(started), data=fields)
    assert_error(again, 401, "unauthorized")
    by_get = await get_callback(server, started, apiKey=fields["apiKey"])
    assert_html(by_get, 401)
    assert len(await btcpay_rows(server)) == 1
    assert len(fake_btcpay.webhooks) == 1


@pytest.mark.parametrize(("age_minutes", "ok"), [(29, True), (31, False)])
async def test_state_lives_30_minutes(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay, age_minutes: int, ok: bool
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    started = await start(server)
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(BTCPayAuthorizeState)
            .where(BTCPayAuthorizeState.state_token == started["state"])
            .values(created_at=clock.real_now() - timedelta(minutes=age_minutes))
        )
    response, _ = await consent(server, fake_btcpay, started)
    if ok:
        assert response.status_code == 200, response.text
        assert len(await btcpay_rows(server)) == 1
    else:
        assert_error(response, 401, "unauthorized")
        assert await btcpay_rows(server) == []
        assert fake_btcpay.api_requests() == []
    assert await states(server) == []


async def test_starting_prunes_states_older_than_30_minutes(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    old = await start(server)
    kept = await start(server)
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(BTCPayAuthorizeState)
            .where(BTCPayAuthorizeState.state_token == old["state"])
            .values(created_at=clock.real_now() - timedelta(minutes=31))
        )
    new = await start(server)
    assert {s.state_token for s in await states(server)} == {kept["state"], new["state"]}


async def test_callback_get_with_error_shows_a_failure_page(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    started = await start(server)
    response = await get_callback(server, started, error="access_denied")
    assert_html(response, 200, "BTCPay was not connected")
    assert await btcpay_rows(server) == []
    assert fake_btcpay.api_requests() == []


async def test_callback_get_without_key_redirects_home(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    started = await start(server)
    response = await server.client.get(callback_url(started))
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert await btcpay_rows(server) == []


async def test_callback_get_with_the_key_in_the_query_connects(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    started = await start(server)
    fields = fake_btcpay.authorize(KEYSAT_PERMISSIONS)
    response = await get_callback(
        server,
        started,
        **{"apiKey": fields["apiKey"], "permissions[]": fields["permissions[]"]},
    )
    assert_html(response, 200, "BTCPay connected")
    [row] = await btcpay_rows(server)
    assert row.api_key == fields["apiKey"]


async def test_bogus_state_is_401_as_json_or_html(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    fields = fake_btcpay.authorize(KEYSAT_PERMISSIONS)
    path = "/v1/btcpay/authorize/callback"
    assert_error(await server.client.post(f"{path}?state=AAAA", data=fields), 401, "unauthorized")
    assert_error(await server.client.post(path, data=fields), 401, "unauthorized")
    page = await server.client.get(path, params={"state": "AAAA", "apiKey": fields["apiKey"]})
    assert_html(page, 401)
    assert await btcpay_rows(server) == []
    assert fake_btcpay.api_requests() == []


async def test_callback_post_without_a_key_is_401_and_keeps_nothing(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    started = await start(server)
    response = await server.client.post(callback_url(started), data={"userId": "u"})
    assert_error(response, 401, "unauthorized")
    assert await btcpay_rows(server) == []


async def test_callback_when_the_profile_got_btcpay_meanwhile_is_409(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    started = await start(server)
    existing = await connect_btcpay_row(server, fake_btcpay)
    response, _ = await consent(server, fake_btcpay, started)
    assert_error(response, 409, "conflict")
    assert [row.id for row in await btcpay_rows(server)] == [existing]
    assert len(fake_btcpay.webhooks) == 1
    page_state = await start_for_get(server, fake_btcpay)
    assert page_state.status_code == 409


async def start_for_get(server: Any, fake: FakeBTCPay) -> httpx.Response:
    """A state for a profile that has BTCPay by now, completed by GET: an HTML error."""
    async with server.state.db.write() as session:
        profile = await default_profile(session)
        session.add(
            BTCPayAuthorizeState(
                state_token="B" * 32,
                created_at=clock.real_now(),
                merchant_profile_id=profile.id,
                label="x",
                scoped_initiator=False,
                initiator_actor_kind="admin_api_key",
                initiator_actor_id="master",
            )
        )
    fields = fake.authorize(KEYSAT_PERMISSIONS)
    response = await server.client.get(
        "/v1/btcpay/authorize/callback", params={"state": "B" * 32, "apiKey": fields["apiKey"]}
    )
    assert_html(response, 409)
    return response


# --- store detection -------------------------------------------------------------------------


async def test_store_is_the_first_named_store_in_btcpays_order(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    second, third = "SecondStoreSecondStoreSecondStoreSecond1234", "ThirdStoreThirdStore12"
    fake_btcpay.add_store(second, "Second")
    fake_btcpay.add_store(third, "Third")
    started = await start(server)
    # Granted on the third and second stores, in that order: BTCPay lists second first.
    response, _ = await consent(server, fake_btcpay, started, store_ids=[third, second])
    assert response.status_code == 200, response.text
    [row] = await btcpay_rows(server)
    assert row.store_id == second
    [register] = fake_btcpay.api_requests("POST", "/webhooks$")
    assert register.path == f"/api/v1/stores/{second}/webhooks"


async def test_store_named_in_permissions_but_not_listed_falls_back_to_the_first(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    started = await start(server)
    fields = fake_btcpay.authorize(KEYSAT_PERMISSIONS)
    fields["permissions[]"] = [*fields["permissions[]"], "btcpay.store.canviewinvoices:Ghost"]
    fields["permissions[]"] = [
        p.replace(fake_btcpay.store_id, "Ghost") for p in fields["permissions[]"]
    ]
    response = await server.client.post(callback_url(started), data=fields)
    assert response.status_code == 200, response.text
    [row] = await btcpay_rows(server)
    assert row.store_id == fake_btcpay.store_id


async def test_store_without_named_permissions_is_the_first_listed(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    fake_btcpay.add_store("LaterStoreLaterStoreLa", "Later")
    started = await start(server)
    response, fields = await consent(server, fake_btcpay, started, store_ids=[])
    assert response.status_code == 200, response.text
    assert all(":" not in p for p in fields["permissions[]"])
    [row] = await btcpay_rows(server)
    assert row.store_id == fake_btcpay.store_id


async def test_no_store_is_400(
    make_server: Callable[..., Any], no_store_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, no_store_btcpay)
    started = await start(server)
    response, _ = await consent(server, no_store_btcpay, started)
    assert_error(response, 400, "bad_request")
    assert await btcpay_rows(server) == []
    assert no_store_btcpay.webhooks == []


async def test_store_list_failure_is_502(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    started = await start(server)
    fake_btcpay.fail_next("GET", "^/api/v1/stores$", status=500)
    response, fields = await consent(server, fake_btcpay, started)
    assert_error(response, 502, "upstream_error")
    assert fields["apiKey"] not in response.text
    assert await btcpay_rows(server) == []


# --- network detection and the sandbox gate ---------------------------------------------------


async def test_network_is_detected_and_stored_outside_sandbox(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    chain = [{"paymentMethodId": "BTC-CHAIN", "enabled": True}]
    cases: list[tuple[str, list[dict[str, Any]], str | None, str]] = [
        (REGTEST, chain, None, "regtest"),
        (TESTNET, chain, None, "testnet"),
        (MAINNET, chain, None, "mainnet"),
        ("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", chain, None, "mainnet"),
        ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", chain, None, "testnet"),
        ("something odd", chain, None, "unknown"),
        (TESTNET, [{"paymentMethodId": "BTC", "enabled": True}], None, "testnet"),
        (TESTNET, [{"paymentMethodId": "btc-chain", "enabled": True}], None, "testnet"),
        (TESTNET, [{"paymentMethodId": "BTC-LN", "enabled": True}], None, "unknown"),
        (TESTNET, [], None, "unknown"),
        (TESTNET, chain, "/payment-methods$", "unknown"),
        (TESTNET, chain, "/wallet/address$", "unknown"),
    ]
    for index, (address, methods, failing, network) in enumerate(cases):
        fake_btcpay.set_receive_address(address)
        fake_btcpay.set_payment_methods(methods)
        if failing is not None:
            fake_btcpay.fail_next("GET", failing, status=500)
        row = await connect_profile(server, fake_btcpay, f"Shop {index}")
        assert row.network == network, (address, methods, failing)
        [audit] = [
            a for a in await audit_rows(server, "payment_provider.connect") if a.target_id == row.id
        ]
        assert audit.details["network"] == network


async def test_sandbox_mode_refuses_mainnet_and_undetermined_stores(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay, KEYSAT_SANDBOX_MODE="true")
    chain = [{"paymentMethodId": "BTC-CHAIN", "enabled": True}]
    cases: list[tuple[str, list[dict[str, Any]], str | None]] = [
        (MAINNET, chain, None),
        ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", chain, None),
        ("not an address", chain, None),
        (TESTNET, [{"paymentMethodId": "BTC-LN", "enabled": True}], None),
        (TESTNET, chain, "/wallet/address$"),
        (TESTNET, chain, "/payment-methods$"),
    ]
    for address, methods, failing in cases:
        fake_btcpay.set_receive_address(address)
        fake_btcpay.set_payment_methods(methods)
        if failing is not None:
            fake_btcpay.fail_next("GET", failing, status=500)
        started = await start(server)
        response, _ = await consent(server, fake_btcpay, started)
        assert_error(response, 400, "bad_request")
    assert await btcpay_rows(server) == []
    assert fake_btcpay.webhooks == []
    assert await audit_rows(server, "payment_provider.connect") == []
    assert fake_btcpay.api_requests("POST") == []


async def test_sandbox_mode_connects_test_network_stores(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay, KEYSAT_SANDBOX_MODE="true")
    fake_btcpay.set_receive_address(TESTNET)
    testnet = await connect_profile(server, fake_btcpay, "Testnet shop")
    assert testnet.network == "testnet"
    fake_btcpay.set_receive_address(REGTEST)
    started = await start(server)
    response, _ = await consent(server, fake_btcpay, started)
    assert response.status_code == 200, response.text
    profile = await the_default_profile(server)
    [regtest] = [r for r in await btcpay_rows(server) if r.merchant_profile_id == profile.id]
    assert regtest.network == "regtest"
    await create_product(server, "acme", price_sats=5000)
    answer = await purchase(server, "acme")
    invoice = await invoice_row(server, answer["invoice_id"])
    assert (invoice.provider_kind, invoice.payment_provider_id) == ("btcpay", regtest.id)


async def test_sandbox_gate_refusal_by_get_is_an_html_400(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay, KEYSAT_SANDBOX_MODE="true")
    fake_btcpay.set_receive_address(MAINNET)
    started = await start(server)
    fields = fake_btcpay.authorize(KEYSAT_PERMISSIONS)
    response = await get_callback(server, started, apiKey=fields["apiKey"])
    assert_html(response, 400, "BTCPay was not connected")
    assert await btcpay_rows(server) == []


# --- registering the webhook -------------------------------------------------------------------


async def test_webhook_registration_failure_is_502_and_no_row(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    started = await start(server)
    fake_btcpay.fail_next("POST", "/webhooks$", status=500)
    response, fields = await consent(server, fake_btcpay, started)
    assert_error(response, 502, "upstream_error")
    assert response.json()["message"].startswith("upstream error: ")
    assert fields["apiKey"] not in response.text
    assert await btcpay_rows(server) == []
    assert await audit_rows(server, "payment_provider.connect") == []


async def test_the_secret_btcpay_answers_with_is_stored(
    make_server: Callable[..., Any],
) -> None:
    with OwnSecretBTCPay() as fake:
        server = await btcpay_server(make_server, fake)
        row = await connect(server, fake)
        [register] = fake.api_requests("POST", "/webhooks$")
        assert register.json()["secret"] != OwnSecretBTCPay.chosen_secret
        assert row.webhook_secret == OwnSecretBTCPay.chosen_secret

        await create_product(server, "acme", price_sats=5000)
        answer = await purchase(server, "acme")
        fake.set_invoice_status(answer["btcpay_invoice_id"], "Settled")
        response = await fake.deliver_webhook(answer["btcpay_invoice_id"], client=server.client)
        assert response.status_code == 200, response.text
        assert (await invoice_row(server, answer["invoice_id"])).status == "settled"


async def test_without_a_secret_in_the_answer_the_generated_one_is_stored(
    make_server: Callable[..., Any],
) -> None:
    with SecretlessBTCPay() as fake:
        server = await btcpay_server(make_server, fake)
        row = await connect(server, fake)
        [register] = fake.api_requests("POST", "/webhooks$")
        assert row.webhook_secret == register.json()["secret"]
        assert SECRET.match(row.webhook_secret or "")


# --- disconnect --------------------------------------------------------------------------------


async def test_disconnect_without_provider_is_a_noop(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    response = await server.admin_post(DISCONNECT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"ok", "noop", "message"}
    assert (body["ok"], body["noop"]) == (True, True)
    assert body["message"]
    assert await audit_rows(server, "payment_provider.disconnect") == []
    assert fake_btcpay.api_requests() == []


async def add_subscription(server: Any, invoice_id: str, provider_id: str) -> str:
    """A subscription referencing the provider, written straight to the database."""
    [lic] = await licenses_for_invoice(server, invoice_id)
    invoice = await invoice_row(server, invoice_id)
    at = clock.now()
    subscription_id = new_id()
    async with server.state.db.write() as session:
        session.add(
            Subscription(
                id=subscription_id,
                license_id=lic.id,
                policy_id=lic.policy_id,
                product_id=invoice.product_id,
                status="active",
                period_days=30,
                listed_currency="SAT",
                listed_value=invoice.amount_sats,
                started_at=at,
                current_period_start=at,
                current_period_end=at + timedelta(days=30),
                payment_provider_id=provider_id,
                provider_kind="btcpay",
                created_at=at,
                updated_at=at,
            )
        )
    return subscription_id


async def test_disconnect_revokes_at_btcpay_and_keeps_invoices(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    row = await connect(server, fake_btcpay)
    profile = await the_default_profile(server)
    async with server.state.db.write() as session:
        session.add(
            RailPreference(
                merchant_profile_id=profile.id, rail="lightning", payment_provider_id=row.id
            )
        )
    await create_product(server, "acme", price_sats=5000)
    await server.admin_post(
        "/v1/admin/policies", {"product_slug": "acme", "slug": "std", "name": "Std"}
    )
    settled = await purchase(server, "acme", policy_slug="std")
    fake_btcpay.set_invoice_status(settled["btcpay_invoice_id"], "Settled")
    await fake_btcpay.deliver_webhook(settled["btcpay_invoice_id"], client=server.client)
    subscription_id = await add_subscription(server, settled["invoice_id"], row.id)
    pending = await purchase(server, "acme")

    response = await server.admin_post(DISCONNECT)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "ok": True,
        "noop": False,
        "provider_id": row.id,
        "store_id": fake_btcpay.store_id,
        "webhook_id": row.webhook_id,
        "warnings": [],
    }
    # At BTCPay: the webhook is gone and the key revoked, through the store-scoped paths.
    assert fake_btcpay.webhooks == []
    assert row.api_key not in fake_btcpay.api_keys
    deletes = [r.path for r in fake_btcpay.api_requests("DELETE")]
    assert deletes == [
        f"/api/v1/stores/{fake_btcpay.store_id}/webhooks/{row.webhook_id}",
        "/api/v1/api-keys/current",
    ]
    for request in fake_btcpay.api_requests("DELETE"):
        assert request.headers["authorization"] == f"token {row.api_key}"

    assert await btcpay_rows(server) == []
    async with server.state.db.read() as session:
        assert (await session.execute(sa.select(RailPreference))).first() is None
        subscription = await session.get(Subscription, subscription_id)
        assert subscription is not None
        assert subscription.payment_provider_id is None
        invoices = (await session.execute(sa.select(Invoice))).scalars().all()
    assert {i.id for i in invoices} == {settled["invoice_id"], pending["invoice_id"]}
    for invoice in invoices:
        assert invoice.payment_provider_id is None
        assert invoice.provider_kind == "btcpay"
    assert (await invoice_row(server, settled["invoice_id"])).status == "settled"
    assert len(await licenses_for_invoice(server, settled["invoice_id"])) == 1

    [audit] = await audit_rows(server, "payment_provider.disconnect")
    assert (audit.actor_kind, audit.target_kind, audit.target_id) == (
        "admin_api_key",
        "payment_provider",
        row.id,
    )
    assert audit.details == {
        "kind": "btcpay",
        "store_id": fake_btcpay.store_id,
        "webhook_id": row.webhook_id,
    }
    assert (await server.admin_get("/v1/admin/btcpay/status")).json() == {"connected": False}
    # The old webhook URL is dead, and the reconciler skips the orphaned invoice.
    gone = await server.client.post(
        f"/v1/btcpay/webhook/{row.id}", content=b'{"type":"InvoiceSettled","invoiceId":"x"}'
    )
    assert_error(gone, 404, "not_found")
    run = await server.admin_post("/v1/admin/jobs/reconciler/run")
    assert run.status_code == 200, run.text
    assert (await invoice_row(server, pending["invoice_id"])).status == "pending"
    # Connecting again works.
    again = await connect(server, fake_btcpay)
    assert again.id != row.id


async def test_disconnect_by_provider_id(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    default_row = await connect_btcpay_row(server, fake_btcpay)
    other = await add_profile(server, "Side shop")
    other_row = await connect_btcpay_row(server, fake_btcpay, profile_id=other)
    response = await server.admin_post(DISCONNECT, {"provider_id": other_row})
    assert response.status_code == 200, response.text
    assert response.json()["provider_id"] == other_row
    assert [row.id for row in await btcpay_rows(server)] == [default_row]


async def test_disconnect_of_a_non_btcpay_id_is_404(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay, fake_zaprite: FakeZaprite
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    btcpay_id = await connect_btcpay_row(server, fake_btcpay)
    zaprite_id = await connect_zaprite_row(server, fake_zaprite)
    for target in (zaprite_id, "00000000-0000-4000-8000-000000000000", "not-a-uuid"):
        response = await server.admin_post(DISCONNECT, {"provider_id": target})
        assert_error(response, 404, "not_found", f"not found: payment provider '{target}'")
    assert [row.id for row in await btcpay_rows(server)] == [btcpay_id]
    assert fake_btcpay.api_requests("DELETE") == []
    async with server.state.db.read() as session:
        assert await session.get(PaymentProvider, zaprite_id) is not None


async def test_disconnect_collects_warnings_when_btcpay_fails(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    row = await connect(server, fake_btcpay)
    fake_btcpay.fail_next("DELETE", "/webhooks/", status=500)
    fake_btcpay.fail_next("DELETE", "/api-keys/current$", status=503)
    response = await server.admin_post(DISCONNECT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["ok"], body["noop"], body["provider_id"]) == (True, False, row.id)
    assert len(body["warnings"]) == 2
    assert all(isinstance(w, str) and w for w in body["warnings"])
    assert row.api_key not in json.dumps(body)
    assert row.webhook_secret not in json.dumps(body)
    assert await btcpay_rows(server) == []
    assert len(await audit_rows(server, "payment_provider.disconnect")) == 1


async def test_disconnect_counts_btcpay_404_as_done(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    row = await connect(server, fake_btcpay)
    async with httpx.AsyncClient() as client:
        gone = await client.delete(
            f"{fake_btcpay.url}/api/v1/stores/{fake_btcpay.store_id}/webhooks/{row.webhook_id}",
            headers={"Authorization": f"token {row.api_key}"},
        )
    assert gone.status_code == 200
    response = await server.admin_post(DISCONNECT)
    assert response.status_code == 200, response.text
    assert response.json()["warnings"] == []
    assert await btcpay_rows(server) == []


# --- status and payment methods --------------------------------------------------------------


async def test_btcpay_status(make_server: Callable[..., Any], fake_btcpay: FakeBTCPay) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    assert (await server.admin_get("/v1/admin/btcpay/status")).json() == {"connected": False}
    other = await add_profile(server, "Side shop")
    provider_id = await connect_btcpay_row(server, fake_btcpay, profile_id=other)
    assert (await server.admin_get("/v1/admin/btcpay/status")).json() == {"connected": False}
    response = await server.admin_get("/v1/admin/btcpay/status", merchant_profile_id=other)
    async with server.state.db.read() as session:
        row = await session.get(PaymentProvider, provider_id)
    assert row is not None
    assert response.json() == {
        "connected": True,
        "provider_id": provider_id,
        "store_id": fake_btcpay.store_id,
        "webhook_id": row.webhook_id,
        "base_url": fake_btcpay.url,
        "label": "BTCPay test store",
        "merchant_profile_id": other,
        "merchant_profile_name": "Side shop",
    }
    missing = await server.admin_get("/v1/admin/btcpay/status", merchant_profile_id=new_id())
    assert_error(missing, 404, "not_found")
    assert (await server.client.get("/v1/admin/btcpay/status")).status_code == 401


async def test_payment_provider_status(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay, fake_zaprite: FakeZaprite
) -> None:
    clock.freeze()
    server = await btcpay_server(make_server, fake_btcpay)
    profile = await the_default_profile(server)
    response = await server.admin_get("/v1/admin/payment-provider/status")
    assert response.json() == {
        "btcpay_configured": False,
        "zaprite_configured": False,
        "preferred": None,
        "active": None,
        "merchant_profile_id": profile.id,
        "merchant_profile_name": profile.name,
        "providers": [],
    }
    zaprite_id = await connect_zaprite_row(server, fake_zaprite)
    clock.advance(timedelta(seconds=1))
    btcpay_id = await connect_btcpay_row(server, fake_btcpay)
    response = await server.admin_get("/v1/admin/payment-provider/status")
    assert response.json() == {
        "btcpay_configured": True,
        "zaprite_configured": True,
        "preferred": "zaprite",
        "active": "zaprite",
        "merchant_profile_id": profile.id,
        "merchant_profile_name": profile.name,
        "providers": [
            {
                "id": zaprite_id,
                "kind": "zaprite",
                "label": "Zaprite test org",
                "base_url": fake_zaprite.url,
                "store_id": None,
            },
            {
                "id": btcpay_id,
                "kind": "btcpay",
                "label": "BTCPay test store",
                "base_url": fake_btcpay.url,
                "store_id": fake_btcpay.store_id,
            },
        ],
    }


async def test_payment_methods(make_server: Callable[..., Any], fake_btcpay: FakeBTCPay) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    none = await server.admin_get("/v1/admin/btcpay/payment-methods")
    assert_error(none, 503, "btcpay_not_configured")

    await connect_btcpay_row(server, fake_btcpay)
    methods = [
        {"paymentMethodId": "BTC-CHAIN", "enabled": True, "config": {"accountDerivation": "x"}},
        {"paymentMethodId": "BTC-LN", "enabled": False, "config": None},
        {"paymentMethodId": "BTC-LNURL", "enabled": True},
    ]
    fake_btcpay.set_payment_methods(methods)
    response = await server.admin_get("/v1/admin/btcpay/payment-methods")
    assert response.status_code == 200, response.text
    assert response.json() == {"store_id": fake_btcpay.store_id, "count": 3, "methods": methods}

    fake_btcpay.fail_next("GET", "/payment-methods$", status=500)
    failed = await server.admin_get("/v1/admin/btcpay/payment-methods")
    assert_error(failed, 502, "upstream_error")
    assert fake_btcpay.api_key not in failed.text

    # Another profile: by its id; it has no BTCPay provider, and unknown ids are 404.
    other = await add_profile(server, "Side shop")
    side = await server.admin_get("/v1/admin/btcpay/payment-methods", merchant_profile_id=other)
    assert_error(side, 503, "btcpay_not_configured")
    missing = await server.admin_get(
        "/v1/admin/btcpay/payment-methods", merchant_profile_id=new_id()
    )
    assert_error(missing, 404, "not_found")


# --- the headless seed -----------------------------------------------------------------------


def seed_env(fake: FakeBTCPay) -> dict[str, str]:
    return {
        "BTCPAY_URL": fake.url,
        "BTCPAY_API_KEY": fake.api_key,
        "BTCPAY_STORE_ID": fake.store_id,
        "BTCPAY_WEBHOOK_SECRET": "SEEDEDSECRET",
    }


async def test_seed_connects_the_default_profile_at_start(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await make_server(**seed_env(fake_btcpay))
    profile = await the_default_profile(server)
    [row] = await btcpay_rows(server)
    assert row.merchant_profile_id == profile.id
    assert (row.api_key, row.base_url, row.store_id, row.webhook_secret) == (
        fake_btcpay.api_key,
        fake_btcpay.url,
        fake_btcpay.store_id,
        "SEEDEDSECRET",
    )
    assert row.webhook_id is None
    assert row.network == "unknown"
    status = (await server.admin_get("/v1/admin/btcpay/status")).json()
    assert (status["connected"], status["provider_id"]) == (True, row.id)

    # The seeded store takes payments and its legacy webhook (signed with the seeded
    # secret) settles them.
    await create_product(server, "acme", price_sats=5000)
    answer = await purchase(server, "acme")
    async with httpx.AsyncClient() as client:
        hook = await client.post(
            f"{fake_btcpay.url}/api/v1/stores/{fake_btcpay.store_id}/webhooks",
            headers={"Authorization": f"token {fake_btcpay.api_key}"},
            json={"url": "http://keysat.test/v1/btcpay/webhook", "secret": "SEEDEDSECRET"},
        )
    assert hook.status_code == 200, hook.text
    fake_btcpay.set_invoice_status(answer["btcpay_invoice_id"], "Settled")
    response = await fake_btcpay.deliver_webhook(answer["btcpay_invoice_id"], client=server.client)
    assert response.status_code == 200, response.text
    assert (await invoice_row(server, answer["invoice_id"])).status == "settled"

    # A restart with the same environment adds nothing.
    again = await make_server(**seed_env(fake_btcpay))
    assert [r.id for r in await btcpay_rows(again)] == [row.id]


async def test_seed_needs_all_four_settings(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    for missing in ("BTCPAY_URL", "BTCPAY_API_KEY", "BTCPAY_STORE_ID", "BTCPAY_WEBHOOK_SECRET"):
        env = seed_env(fake_btcpay)
        del env[missing]
        server = await make_server(**env)
        assert await btcpay_rows(server) == [], missing


async def test_seed_keeps_an_existing_provider(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    first = await make_server()
    existing = await connect_btcpay_row(first, fake_btcpay)
    server = await make_server(**seed_env(fake_btcpay))
    [row] = await btcpay_rows(server)
    assert row.id == existing
    assert row.webhook_secret != "SEEDEDSECRET"


async def test_concurrent_callbacks_with_one_state_connect_once(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    """A double-submitted consent form: the state is single-use even under a race."""
    server = await btcpay_server(make_server, fake_btcpay)
    for round_ in range(3):
        profile_id = await add_profile(server, f"Shop {round_}")
        started = await start(server, merchant_profile_id=profile_id)
        fields = fake_btcpay.authorize(KEYSAT_PERMISSIONS)
        responses = await asyncio.gather(
            *(server.client.post(callback_url(started), data=fields) for _ in range(8))
        )
        assert sorted(r.status_code for r in responses) == [200] + [401] * 7
        for response in responses:
            if response.status_code == 401:
                assert_error(response, 401, "unauthorized")
    assert len(await btcpay_rows(server)) == 3
    assert len(fake_btcpay.webhooks) == 3
    assert len(await audit_rows(server, "payment_provider.connect")) == 3


async def test_concurrent_connects_of_one_profile_keep_one_provider(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    """Two connects started for one profile and completed at once: one wins, the other is
    refused with 409 (never a 500)."""
    server = await btcpay_server(make_server, fake_btcpay)
    for round_ in range(3):
        profile_id = await add_profile(server, f"Shop {round_}")
        starts = [await start(server, merchant_profile_id=profile_id) for _ in range(4)]
        responses = await asyncio.gather(
            *(
                server.client.post(
                    callback_url(started), data=fake_btcpay.authorize(KEYSAT_PERMISSIONS)
                )
                for started in starts
            )
        )
        assert sorted(r.status_code for r in responses) == [200, 409, 409, 409]
        for response in responses:
            if response.status_code == 409:
                assert_error(response, 409, "conflict")
    assert len(await btcpay_rows(server)) == 3


async def test_deleting_the_profile_voids_its_pending_connect(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    """admin-api.md 12.5: deleting a profile deletes its pending authorize states, so the
    callback finds no state (401) rather than a state without profile (400)."""
    server = await btcpay_server(make_server, fake_btcpay)
    other = await add_profile(server, "Short-lived")
    started = await start(server, merchant_profile_id=other)
    async with server.state.db.write() as session:
        await session.execute(sa.delete(MerchantProfile).where(MerchantProfile.id == other))
    response, _ = await consent(server, fake_btcpay, started)
    assert_error(response, 401, "unauthorized")
    assert await btcpay_rows(server) == []
    assert fake_btcpay.api_requests() == []


async def test_seed_from_two_processes_starting_together(
    make_server: Callable[..., Any], make_settings: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    """Several processes on one database start at once: one provider, no failed start."""
    server = await make_server()
    settings = make_settings(**seed_env(fake_btcpay))
    databases = [Database(settings.database_url) for _ in range(4)]
    try:
        await asyncio.gather(*(seed_btcpay_from_environment(db, settings) for db in databases))
    finally:
        for db in databases:
            await db.dispose()
    assert len(await btcpay_rows(server)) == 1


async def test_disconnect_with_btcpay_unreachable_still_removes_the_row(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    provider_id = await connect_btcpay_row(server, fake_btcpay)
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(PaymentProvider)
            .where(PaymentProvider.id == provider_id)
            .values(base_url="http://127.0.0.1:9")
        )
    response = await server.admin_post(DISCONNECT, {"provider_id": provider_id})
    assert response.status_code == 200, response.text
    warnings = response.json()["warnings"]
    assert len(warnings) == 2
    assert fake_btcpay.api_key not in json.dumps(warnings)
    assert await btcpay_rows(server) == []


async def test_success_page_escapes_the_profile_name(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await btcpay_server(make_server, fake_btcpay)
    evil = await add_profile(server, "<script>alert(1)</script>")
    started = await start(server, merchant_profile_id=evil)
    response, _ = await consent(server, fake_btcpay, started)
    assert_html(response, 200, "&lt;script&gt;alert(1)&lt;/script&gt;")
    assert "<script>alert(1)" not in response.text
