"""Ending a subscription (billing.md 6.2, 6.7, 6.8; public-api.md 11; admin-api.md 5.6, 9.1,
9.2, 21.6): buyer and admin cancel, revoke, an archived policy at renewal time, and the
admin subscription list."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from keysat.clock import clock
from keysat.keys import encode_key, generate_private_key
from keysat.licensing.models import License
from subscription_support import (
    CENTS,
    T0,
    Subscribed,
    at,
    cycles,
    data_of,
    license_row,
    monthly_shop,
    renewal_invoices,
    subscribe,
    subscription_row,
    tick,
    ts,
    validate,
    windows,
)
from support import (
    assert_error,
    audit_rows,
    create_policy,
    events,
    fields_of,
    issue_license,
    sandbox_action,
)

CANCEL = "/v1/subscriptions/cancel"


@pytest.fixture
async def shop(make_server: Any) -> Any:
    server = await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_SOURCES="none")
    clock.freeze(T0)
    await monthly_shop(server)
    return server


async def buyer_cancel(server: Any, key: str, **body: Any) -> Any:
    return await server.client.post(CANCEL, json={"license_key": key, **body})


async def admin_cancel(server: Any, subscription_id: str, **body: Any) -> Any:
    return await server.admin_post(f"/v1/admin/subscriptions/{subscription_id}/cancel", body)


def assert_unauthorized(response: Any) -> None:
    assert_error(response, 401, "unauthorized", "unauthorized")


async def pay(server: Any, invoice_id: str, moment: datetime) -> None:
    clock.freeze(moment)
    await sandbox_action(server, invoice_id, "pay")


# --- buyer cancel -----------------------------------------------------------------------------


async def test_buyer_cancel_stops_renewals_and_the_license_runs_out_after_grace(
    shop: Any,
) -> None:
    sub = await subscribe(shop)
    clock.freeze(at(1, 10))
    response = await buyer_cancel(shop, sub.license_key, reason="too expensive")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "ok": True,
        "subscription_id": sub.subscription_id,
        "status": "cancelled",
    }
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.cancelled_at, row.cancellation_reason) == (
        "cancelled",
        at(1, 10),
        "too expensive",
    )
    assert row.next_attempt_at is None and row.current_period_end == at(1, 31)
    lic = await license_row(shop, sub.license_id)
    assert (lic.status, lic.expires_at, lic.revoked_at) == ("active", at(1, 31), None)

    [audit] = await audit_rows(shop, "subscription.cancel")
    assert (audit.actor_kind, audit.actor_hash) == ("buyer_license_key", sub.license_id)
    assert (audit.target_kind, audit.target_id) == ("subscription", sub.subscription_id)
    assert audit.details == {
        "license_id": sub.license_id,
        "product_id": row.product_id,
        "policy_id": row.policy_id,
        "reason": "too expensive",
        "actor": "buyer",
    }
    [cancelled] = await events(shop, "subscription.cancelled")
    assert cancelled["timestamp"] == ts(at(1, 10))
    assert cancelled["data"] == {
        "subscription_id": sub.subscription_id,
        "license_id": sub.license_id,
        "product_id": row.product_id,
        "policy_id": row.policy_id,
        "actor": "buyer",
        "reason": "too expensive",
    }

    # No renewal, no lapse: the license keeps validating until paid-through + grace.
    for moment in (at(1, 31), at(2, 7), at(3, 2)):
        await tick(shop, moment)
    assert await renewal_invoices(shop) == []
    assert await events(shop, "subscription.lapsed") == []
    assert (await subscription_row(shop, sub.subscription_id)).status == "cancelled"
    clock.freeze(at(1, 30))
    assert "in_grace_period" not in await validate(shop, sub.license_key)
    clock.freeze(at(2, 6, 23, 59, 59))
    answer = await validate(shop, sub.license_key)
    assert answer["ok"] is True and answer["in_grace_period"] is True
    assert answer["grace_until"] == ts(at(2, 7))
    clock.freeze(at(2, 7))
    answer = await validate(shop, sub.license_key)
    assert (answer["ok"], answer["reason"], answer["expires_at"]) == (
        False,
        "expired",
        ts(at(1, 31)),
    )


async def test_buyer_cancel_without_a_reason_records_null(shop: Any) -> None:
    for index, body in enumerate(({}, {"reason": ""}, {"reason": "   "})):
        sub = await subscribe(shop, f"buyer{index}@example.com")
        assert (await buyer_cancel(shop, sub.license_key, **body)).status_code == 200
        assert (await subscription_row(shop, sub.subscription_id)).cancellation_reason is None
    audits = await audit_rows(shop, "subscription.cancel")
    assert [audit.details["reason"] for audit in audits] == [None, None, None]
    cancelled = data_of(await events(shop, "subscription.cancelled"))
    assert [event["reason"] for event in cancelled] == [None, None, None]


async def test_cancelling_again_answers_already_and_writes_nothing(shop: Any) -> None:
    sub = await subscribe(shop)
    assert (await buyer_cancel(shop, sub.license_key)).status_code == 200
    clock.freeze(at(1, 5))
    for response in (
        await buyer_cancel(shop, sub.license_key, reason="again"),
        await admin_cancel(shop, sub.subscription_id, reason="again"),
    ):
        assert response.status_code == 200
        assert response.json() == {
            "ok": True,
            "already": "cancelled",
            "subscription_id": sub.subscription_id,
        }
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.cancelled_at, row.cancellation_reason) == (T0, None)
    assert len(await audit_rows(shop, "subscription.cancel")) == 1
    assert len(await events(shop, "subscription.cancelled")) == 1


async def test_cancelling_a_lapsed_subscription_answers_already(shop: Any) -> None:
    sub = await subscribe(shop)
    await tick(shop, at(1, 31))
    await tick(shop, at(2, 7))
    for response in (
        await buyer_cancel(shop, sub.license_key),
        await admin_cancel(shop, sub.subscription_id),
    ):
        assert response.status_code == 200
        assert response.json() == {
            "ok": True,
            "already": "lapsed",
            "subscription_id": sub.subscription_id,
        }
    assert (await subscription_row(shop, sub.subscription_id)).status == "lapsed"
    assert await audit_rows(shop, "subscription.cancel") == []
    assert await events(shop, "subscription.cancelled") == []


async def test_buyer_cancel_refuses_bad_keys_with_401(shop: Any) -> None:
    sub = await subscribe(shop)
    forged = encode_key(fields_of(sub.license_key), generate_private_key())
    for key in ("garbage", "LIC1-AAAA-BBBB", forged, sub.license_key[:-4] + "AAAA"):
        assert_unauthorized(await buyer_cancel(shop, key))
    assert (await subscription_row(shop, sub.subscription_id)).status == "active"


async def test_buyer_cancel_refuses_a_key_of_a_license_that_is_gone_or_moved(shop: Any) -> None:
    sub = await subscribe(shop)
    async with shop.state.db.read() as session:
        key = (await shop.state.issuer_keys.current(session)).private_key
    unknown = encode_key(fields_of(sub.license_key, license_id=uuid.uuid4()), key)
    other_product = encode_key(fields_of(sub.license_key, product_id=uuid.uuid4()), key)
    assert_unauthorized(await buyer_cancel(shop, unknown))
    assert_unauthorized(await buyer_cancel(shop, other_product))


@pytest.mark.parametrize("action", ["suspend", "revoke"])
async def test_buyer_cancel_of_a_suspended_or_revoked_license_is_401(
    shop: Any, action: str
) -> None:
    sub = await subscribe(shop)
    response = await shop.admin_post(f"/v1/admin/licenses/{sub.license_id}/{action}", {})
    assert response.status_code == 200
    audits = len(await audit_rows(shop, "subscription.cancel"))
    assert_unauthorized(await buyer_cancel(shop, sub.license_key))
    assert len(await audit_rows(shop, "subscription.cancel")) == audits


async def test_buyer_cancel_of_a_license_without_subscription_is_404(shop: Any) -> None:
    await create_policy(shop, "acme", "forever")
    issued = await issue_license(shop, "acme", policy_slug="forever")
    response = await buyer_cancel(shop, issued["license_key"])
    assert_error(response, 404, "not_found", "not found: no subscription tied to this license")


async def test_buyer_cancel_bad_bodies_are_400(shop: Any) -> None:
    for body in ({}, {"license_key": 5}, [1]):
        response = await shop.client.post(CANCEL, json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "bad_request"
    sub = await subscribe(shop)
    response = await buyer_cancel(shop, sub.license_key, reason="x" * 1_001)
    assert response.status_code == 400 and response.json()["error"] == "bad_request"
    response = await admin_cancel(shop, sub.subscription_id, reason="x" * 1_001)
    assert response.status_code == 400 and response.json()["error"] == "bad_request"
    response = await shop.client.post(
        CANCEL, content=b"{", headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "bad_request")
    assert (await subscription_row(shop, sub.subscription_id)).status == "active"


# --- admin cancel -----------------------------------------------------------------------------


async def test_admin_cancel(shop: Any) -> None:
    sub = await subscribe(shop)
    clock.freeze(at(1, 3))
    response = await admin_cancel(shop, sub.subscription_id, reason="chargeback")
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "subscription_id": sub.subscription_id,
        "status": "cancelled",
    }
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.cancelled_at, row.cancellation_reason) == (
        "cancelled",
        at(1, 3),
        "chargeback",
    )
    [audit] = await audit_rows(shop, "subscription.cancel")
    assert audit.actor_kind == "admin_api_key"
    assert (audit.target_kind, audit.target_id) == ("subscription", sub.subscription_id)
    assert audit.details["actor"] == "admin" and audit.details["reason"] == "chargeback"
    [cancelled] = data_of(await events(shop, "subscription.cancelled"))
    assert (cancelled["actor"], cancelled["reason"]) == ("admin", "chargeback")
    assert (await license_row(shop, sub.license_id)).status == "active"
    await tick(shop, at(1, 31))
    assert await renewal_invoices(shop) == []


async def test_admin_cancel_of_an_unknown_subscription_is_404_and_needs_credentials(
    shop: Any,
) -> None:
    for raw in ("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d", "not-an-id"):
        response = await admin_cancel(shop, raw)
        assert_error(response, 404, "not_found", f"not found: subscription '{raw}'")
    sub = await subscribe(shop)
    response = await shop.client.post(f"/v1/admin/subscriptions/{sub.subscription_id}/cancel")
    assert response.status_code == 401
    assert (await subscription_row(shop, sub.subscription_id)).status == "active"


# --- an open renewal invoice stays payable after cancel ---------------------------------------


async def test_open_renewal_paid_after_cancel_reactivates_on_schedule(shop: Any) -> None:
    sub = await subscribe(shop)
    await tick(shop, at(1, 31))
    [invoice] = await renewal_invoices(shop)
    clock.freeze(at(2, 1))
    assert (await buyer_cancel(shop, sub.license_key, reason="oops")).status_code == 200
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.open_invoice_id) == ("cancelled", invoice.id)

    await pay(shop, invoice.id, at(2, 3))
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.cancelled_at, row.cancellation_reason) == ("active", None, None)
    assert (row.open_invoice_id, row.next_attempt_at) == (None, at(3, 2))
    assert windows(await cycles(shop, sub.subscription_id))[1] == (2, at(1, 31), at(3, 2))
    assert (await license_row(shop, sub.license_id)).expires_at == at(3, 2)
    [renewed] = data_of(await events(shop, "subscription.renewed"))
    assert renewed["reactivated"] is True and renewed["cycle_number"] == 2
    await tick(shop, at(3, 2))
    assert [i.cycle_number for i in await renewal_invoices(shop)] == [2, 3]


async def test_open_renewal_paid_after_cancel_and_deadline_restarts_at_payment(
    shop: Any,
) -> None:
    sub = await subscribe(shop)
    await tick(shop, at(1, 31))
    [invoice] = await renewal_invoices(shop)
    assert (await admin_cancel(shop, sub.subscription_id)).status_code == 200
    await tick(shop, at(2, 9))
    # Cancelled subscriptions do not lapse.
    assert (await subscription_row(shop, sub.subscription_id)).status == "cancelled"
    await pay(shop, invoice.id, at(2, 9))
    assert windows(await cycles(shop, sub.subscription_id))[1] == (2, at(2, 9), at(3, 11))
    assert (await license_row(shop, sub.license_id)).expires_at == at(3, 11)


async def test_expired_renewal_of_a_cancelled_subscription_is_not_replaced(shop: Any) -> None:
    sub = await subscribe(shop)
    await tick(shop, at(1, 31))
    [invoice] = await renewal_invoices(shop)
    assert (await buyer_cancel(shop, sub.license_key)).status_code == 200
    clock.freeze(at(2, 2))
    await sandbox_action(shop, invoice.id, "expire")
    await tick(shop, at(2, 3))
    assert len(await renewal_invoices(shop)) == 1
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.next_attempt_at) == ("cancelled", None)


# --- revoke cancels the subscription ---------------------------------------------------------


@pytest.mark.parametrize(("body", "reason"), [({"reason": "fraud"}, "fraud"), ({}, "admin revoke")])
async def test_revoke_cancels_the_live_subscription_in_the_same_transaction(
    shop: Any, body: dict[str, Any], reason: str
) -> None:
    sub = await subscribe(shop)
    clock.freeze(at(1, 4))
    response = await shop.admin_post(f"/v1/admin/licenses/{sub.license_id}/revoke", body)
    assert response.status_code == 200 and response.json() == {"ok": True}
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.cancelled_at) == ("cancelled", at(1, 4))
    assert row.cancellation_reason == f"license revoked: {reason}"
    [audit] = await audit_rows(shop, "subscription.cancel")
    assert audit.actor_kind == "admin_api_key"
    assert (audit.target_kind, audit.target_id) == ("subscription", sub.subscription_id)
    assert audit.details == {
        "license_id": sub.license_id,
        "product_id": row.product_id,
        "policy_id": row.policy_id,
        "reason": f"license revoked: {reason}",
        "actor": "admin",
    }
    [cancelled] = data_of(await events(shop, "subscription.cancelled"))
    assert (cancelled["actor"], cancelled["reason"]) == ("admin", f"license revoked: {reason}")
    assert len(await audit_rows(shop, "license.revoke")) == 1
    assert len(await events(shop, "license.revoked")) == 1

    for moment in (at(1, 31), at(2, 7), at(3, 2)):
        await tick(shop, moment)
    assert await renewal_invoices(shop) == []
    assert (await validate(shop, sub.license_key))["reason"] == "revoked"


async def test_revoke_of_a_lapsed_subscription_leaves_it_lapsed(shop: Any) -> None:
    sub = await subscribe(shop)
    await tick(shop, at(1, 31))
    await tick(shop, at(2, 7))
    response = await shop.admin_post(f"/v1/admin/licenses/{sub.license_id}/revoke", {})
    assert response.status_code == 200
    assert (await subscription_row(shop, sub.subscription_id)).status == "lapsed"
    assert await audit_rows(shop, "subscription.cancel") == []
    assert await events(shop, "subscription.cancelled") == []


async def test_worker_never_invoices_a_revoked_license(shop: Any) -> None:
    """A license revoked behind the revoke route's back (billing.md 6.4 step 2): the worker
    cancels with reason `license revoked`, actor system, and invoices nothing."""
    sub = await subscribe(shop)
    async with shop.state.db.write() as session:
        await session.execute(
            sa.update(License)
            .where(License.id == sub.license_id)
            .values(status="revoked", revoked_at=T0, revocation_reason="direct")
        )
    await tick(shop, at(1, 31))
    assert await renewal_invoices(shop) == []
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.cancellation_reason, row.cancelled_at) == (
        "cancelled",
        "license revoked",
        at(1, 31),
    )
    [cancelled] = data_of(await events(shop, "subscription.cancelled"))
    assert (cancelled["actor"], cancelled["reason"]) == ("system", "license revoked")
    [audit] = await audit_rows(shop, "subscription.cancel")
    assert audit.actor_kind == "system" and audit.details["actor"] == "system"


async def test_paying_after_revoke_extends_but_keeps_it_revoked(shop: Any) -> None:
    """billing.md 4.5 step 3: a revoked license stays revoked; the next renewal is refused
    by the worker (6.4 step 2)."""
    sub = await subscribe(shop)
    await tick(shop, at(1, 31))
    [invoice] = await renewal_invoices(shop)
    assert (await shop.admin_post(f"/v1/admin/licenses/{sub.license_id}/revoke", {})).is_success
    await pay(shop, invoice.id, at(2, 2))
    lic = await license_row(shop, sub.license_id)
    assert (lic.status, lic.expires_at) == ("revoked", at(3, 2))
    await tick(shop, at(3, 2))
    assert len(await renewal_invoices(shop)) == 1
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.cancellation_reason) == ("cancelled", "license revoked")


# --- an archived policy at renewal time -------------------------------------------------------


async def test_archived_policy_at_renewal_cancels_once(shop: Any) -> None:
    sub = await subscribe(shop)
    row = await subscription_row(shop, sub.subscription_id)
    response = await shop.admin_patch(
        f"/v1/admin/policies/{row.policy_id}/archived", {"archived": True}
    )
    assert response.status_code == 200
    await tick(shop, at(1, 31))
    assert await renewal_invoices(shop) == []
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.cancellation_reason, row.cancelled_at) == (
        "cancelled",
        "policy_archived",
        at(1, 31),
    )
    [skipped] = await events(shop, "subscription.renewal_skipped")
    assert skipped["data"] == {
        "subscription_id": sub.subscription_id,
        "license_id": sub.license_id,
        "product_id": row.product_id,
        "policy_id": row.policy_id,
        "policy_slug": "monthly",
        "reason": "policy_archived",
    }
    [cancelled] = data_of(await events(shop, "subscription.cancelled"))
    assert (cancelled["actor"], cancelled["reason"]) == ("system", "policy_archived")
    [audit] = await audit_rows(shop, "subscription.renewal_skipped_archived")
    assert audit.actor_kind == "system"
    assert (audit.target_kind, audit.target_id) == ("subscription", sub.subscription_id)

    # Keysat 0.2.0 skipped it again every minute; here it is over.
    for moment in (at(1, 31, 0, 1), at(2, 7), at(3, 2)):
        await tick(shop, moment)
    assert len(await events(shop, "subscription.renewal_skipped")) == 1
    assert len(await events(shop, "subscription.cancelled")) == 1
    assert await renewal_invoices(shop) == []


async def test_hidden_policy_keeps_renewing(shop: Any) -> None:
    sub = await subscribe(shop)
    row = await subscription_row(shop, sub.subscription_id)
    response = await shop.admin_patch(
        f"/v1/admin/policies/{row.policy_id}/public", {"public": False}
    )
    assert response.status_code == 200
    await tick(shop, at(1, 31))
    assert len(await renewal_invoices(shop)) == 1
    assert await events(shop, "subscription.renewal_skipped") == []


# --- GET /v1/admin/subscriptions --------------------------------------------------------------

SUBSCRIPTION_FIELDS = {
    "id",
    "license_id",
    "policy_id",
    "product_id",
    "status",
    "listed_currency",
    "listed_value",
    "period_days",
    "started_at",
    "current_period_start",
    "next_renewal_at",
    "cancelled_at",
    "cancellation_reason",
    "lapsed_at",
    "consecutive_failures",
    "merchant_profile_id",
    "payment_provider_id",
    "provider_kind",
}


async def listing(server: Any, **params: Any) -> list[dict[str, Any]]:
    response = await server.admin_get("/v1/admin/subscriptions", **params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"subscriptions"}
    return list(body["subscriptions"])


async def four_states(server: Any) -> dict[str, Subscribed]:
    """Subscriptions started Jan 1, 2, 3 and 20: lapsed, cancelled, past_due and active."""
    subs: dict[str, Subscribed] = {}
    starts = {"lapsed": 1, "cancelled": 2, "past_due": 3, "active": 20}
    for name, day in starts.items():
        clock.freeze(at(1, day))
        subs[name] = await subscribe(server, f"{name}@example.com")
    await tick(server, at(2, 1))  # the first three are invoiced (cycle ends Jan 31-Feb 2)
    assert (await admin_cancel(server, subs["cancelled"].subscription_id)).status_code == 200
    await tick(server, at(2, 7))  # the first one lapses
    return subs


async def test_list_subscriptions_json_and_filters(shop: Any) -> None:
    subs = await four_states(shop)
    everything = await listing(shop)
    assert [s["id"] for s in everything] == [
        subs[name].subscription_id for name in ("active", "past_due", "cancelled", "lapsed")
    ]
    for item in everything:
        assert set(item) == SUBSCRIPTION_FIELDS
    by_status = {item["status"]: item for item in everything}
    assert set(by_status) == {"active", "past_due", "cancelled", "lapsed"}

    lapsed = by_status["lapsed"]
    row = await subscription_row(shop, subs["lapsed"].subscription_id)
    assert lapsed == {
        "id": row.id,
        "license_id": subs["lapsed"].license_id,
        "policy_id": row.policy_id,
        "product_id": row.product_id,
        "status": "lapsed",
        "listed_currency": "USD",
        "listed_value": CENTS,
        "period_days": 30,
        "started_at": ts(at(1, 1)),
        "current_period_start": ts(at(1, 1)),
        "next_renewal_at": ts(at(1, 31)),
        "cancelled_at": None,
        "cancellation_reason": None,
        "lapsed_at": ts(at(2, 7)),
        "consecutive_failures": 0,
        "merchant_profile_id": row.merchant_profile_id,
        "payment_provider_id": None,
        "provider_kind": "sandbox",
    }
    assert by_status["cancelled"]["cancelled_at"] == ts(at(2, 1))
    # next_renewal_at is the paid-through time (= the license's expires_at).
    for name, item in by_status.items():
        lic = await license_row(shop, subs[name].license_id)
        assert item["next_renewal_at"] == ts(lic.expires_at)  # type: ignore[arg-type]
    assert by_status["active"]["next_renewal_at"] == ts(at(2, 19))

    for name in ("active", "past_due", "cancelled", "lapsed"):
        [only] = await listing(shop, status=name)
        assert only["id"] == subs[name].subscription_id
    [only] = await listing(shop, license_id=subs["past_due"].license_id)
    assert only["id"] == subs["past_due"].subscription_id
    assert len(await listing(shop, product_id=lapsed["product_id"])) == 4
    assert await listing(shop, product_id="9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d") == []
    assert await listing(shop, license_id="not-an-id") == []
    assert len(await listing(shop, limit=2)) == 2
    assert len(await listing(shop, limit=0)) == 1
    assert len(await listing(shop, limit=5000)) == 4


async def test_list_subscriptions_refuses_an_unknown_status(shop: Any) -> None:
    for status in ("ACTIVE", "trialing", "", "expired"):
        response = await shop.admin_get("/v1/admin/subscriptions", status=status)
        assert_error(response, 400, "bad_request")
    assert (await shop.client.get("/v1/admin/subscriptions")).status_code == 401
