"""The pure parts of the Zaprite provider: the order status table, amounts, the currency
mapping, what an unsigned webhook names, and saved payment profiles (payments.md 5.3-5.6)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from keysat.outbound import UpstreamError
from keysat.payments.provider import Money, SnapshotStatus
from keysat.payments.zaprite import (
    contact_id_of,
    order_currency,
    saved_profile_for,
    snapshot_from_order,
    webhook_event_name,
    webhook_order_id,
)

# --- status table (5.4) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PAID", SnapshotStatus.SETTLED),
        ("COMPLETE", SnapshotStatus.SETTLED),
        ("OVERPAID", SnapshotStatus.SETTLED),
        ("PENDING", SnapshotStatus.PENDING),
        ("PROCESSING", SnapshotStatus.PENDING),
        ("UNDERPAID", SnapshotStatus.PENDING),
        ("EXPIRED", SnapshotStatus.EXPIRED),
        ("INVALID", SnapshotStatus.INVALID),
        ("CANCELLED", SnapshotStatus.INVALID),
        ("CANCELED", SnapshotStatus.INVALID),
        ("REFUNDED", SnapshotStatus.REFUNDED),
    ],
)
def test_known_statuses_map_per_the_table(raw: str, expected: SnapshotStatus) -> None:
    assert snapshot_from_order({"status": raw}).status is expected


@pytest.mark.parametrize("raw", ["ARCHIVED", "", "PAID_LATER", "SETTLED", 3, None, ["PAID"]])
def test_unknown_or_odd_statuses_are_pending_never_invalid(raw: Any) -> None:
    assert snapshot_from_order({"status": raw}).status is SnapshotStatus.PENDING


def test_missing_status_is_pending() -> None:
    assert snapshot_from_order({"id": "od_1"}).status is SnapshotStatus.PENDING


# --- amounts (2.3, 5.4) ---------------------------------------------------------------------


@pytest.mark.parametrize("currency", ["BTC", "SAT"])
def test_bitcoin_integer_amounts_are_sats(currency: str) -> None:
    snapshot = snapshot_from_order({"status": "PAID", "amount": 7000, "currency": currency})
    assert snapshot.amount == Money("SAT", 7000)


@pytest.mark.parametrize("currency", ["USD", "EUR"])
def test_other_currencies_are_reported_in_that_currency(currency: str) -> None:
    snapshot = snapshot_from_order({"status": "PAID", "amount": 2500, "currency": currency})
    assert snapshot.amount == Money(currency, 2500)


def test_one_sat_is_a_usable_amount() -> None:
    assert snapshot_from_order({"amount": 1, "currency": "BTC"}).amount == Money("SAT", 1)


@pytest.mark.parametrize(
    "order",
    [
        {"currency": "BTC"},
        {"amount": None, "currency": "BTC"},
        {"amount": 0, "currency": "BTC"},
        {"amount": -5, "currency": "BTC"},
        {"amount": -5, "currency": "USD"},
        {"amount": 7000.0, "currency": "BTC"},
        {"amount": 0.5, "currency": "BTC"},
        {"amount": "7000", "currency": "BTC"},
        {"amount": True, "currency": "BTC"},
        {"amount": [7000], "currency": "BTC"},
        {"amount": 7000},
        {"amount": 7000, "currency": None},
        {"amount": 7000, "currency": 7},
    ],
)
def test_unusable_amounts_are_no_opinion(order: dict[str, Any]) -> None:
    assert snapshot_from_order({"status": "PAID", **order}).amount is None


def test_external_order_id_is_carried_when_a_string() -> None:
    assert snapshot_from_order({"externalUniqId": "inv-1"}).external_order_id == "inv-1"
    assert snapshot_from_order({"externalUniqId": 12}).external_order_id is None
    assert snapshot_from_order({}).external_order_id is None


# --- currency mapping (5.3) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "expected"), [("SAT", "BTC"), ("BTC", "BTC"), ("USD", "USD"), ("EUR", "EUR")]
)
def test_order_currency_mapping(currency: str, expected: str) -> None:
    assert order_currency(Money(currency, 100)) == expected


@pytest.mark.parametrize("currency", ["GBP", "JPY", "XAU", ""])
def test_order_currency_refuses_the_rest_with_a_provider_error(currency: str) -> None:
    with pytest.raises(UpstreamError, match="Zaprite cannot invoice in"):
        order_currency(Money(currency, 100))


# --- webhook order id (5.5 step 3) ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"event": "order.paid", "data": {"id": "od_1", "status": "PAID"}},
        {"event": "order.paid", "data": {"object": {"id": "od_1"}}},
        {"event": "order.paid", "orderId": "od_1"},
        {"event": "order.paid", "id": "od_1"},
    ],
    ids=["data.id", "data.object.id", "orderId", "id"],
)
def test_each_body_shape_names_the_order(body: dict[str, Any]) -> None:
    assert webhook_order_id(body) == "od_1"


def test_data_id_wins_over_everything() -> None:
    body = {
        "id": "evt_4",
        "orderId": "od_3",
        "data": {"id": "od_1", "object": {"id": "od_2"}},
    }
    assert webhook_order_id(body) == "od_1"


def test_data_object_id_wins_over_top_level_fields() -> None:
    body = {"id": "evt_4", "orderId": "od_3", "data": {"object": {"id": "od_2"}}}
    assert webhook_order_id(body) == "od_2"


def test_order_id_wins_over_top_level_id() -> None:
    assert webhook_order_id({"id": "evt_4", "orderId": "od_3"}) == "od_3"


def test_non_string_candidates_are_skipped() -> None:
    body = {"data": {"id": 17, "object": {"id": None}}, "orderId": ["od_3"], "id": "od_4"}
    assert webhook_order_id(body) == "od_4"
    assert webhook_order_id({"data": "od_1", "id": "od_4"}) == "od_4"
    assert webhook_order_id({"data": {"object": "od_2"}, "orderId": "od_3"}) == "od_3"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"event": "order.paid"},
        {"data": {}},
        {"data": {"id": 5}},
        {"id": 5, "orderId": None},
        ["od_1"],
        "od_1",
        None,
        17,
    ],
)
def test_no_order_id(body: Any) -> None:
    assert webhook_order_id(body) is None


# --- webhook event name (5.5 step 2) --------------------------------------------------------


def test_event_name_key_precedence() -> None:
    body = {"name": "n", "type": "t", "eventType": "et", "event": "e"}
    assert webhook_event_name(body) == "e"
    del body["event"]
    assert webhook_event_name(body) == "et"
    del body["eventType"]
    assert webhook_event_name(body) == "t"
    del body["type"]
    assert webhook_event_name(body) == "n"
    del body["name"]
    assert webhook_event_name(body) is None


def test_event_name_skips_empty_and_non_strings() -> None:
    assert webhook_event_name({"event": "", "eventType": 3, "type": "order.paid"}) == "order.paid"
    assert webhook_event_name({"event": None, "name": ""}) is None
    assert webhook_event_name(["order.paid"]) is None


# --- contact id (5.2) -----------------------------------------------------------------------


def test_contact_id_from_contact_object_first() -> None:
    assert contact_id_of({"contact": {"id": "ct_1"}, "contactId": "ct_2"}) == "ct_1"


def test_contact_id_from_contact_id_field() -> None:
    assert contact_id_of({"contactId": "ct_2"}) == "ct_2"
    assert contact_id_of({"contact": None, "contactId": "ct_2"}) == "ct_2"
    assert contact_id_of({"contact": {"email": "a@b.c"}, "contactId": "ct_2"}) == "ct_2"


def test_no_contact() -> None:
    assert contact_id_of({}) is None
    assert contact_id_of({"contact": None, "contactId": None}) is None
    assert contact_id_of({"contactId": ""}) is None
    assert contact_id_of({"contact": {"id": 5}}) is None


def test_an_empty_contact_object_id_is_no_contact() -> None:
    assert contact_id_of({"contact": {"id": ""}}) is None
    assert contact_id_of({"contact": {"id": ""}, "contactId": "ct_2"}) == "ct_2"


# --- saved payment profiles (5.6) -----------------------------------------------------------


def _profile(profile_id: Any, external: str | None, **extra: Any) -> dict[str, Any]:
    source = None if external is None else {"externalUniqId": external, "id": "od_x"}
    return {"id": profile_id, "method": "card", "sourceOrder": source, **extra}


def test_picks_the_profile_saved_on_our_order() -> None:
    contact = {
        "paymentProfiles": [
            _profile("pp_other", "inv-other", expiresAt="2030-01-01T00:00:00Z"),
            _profile("pp_none", None),
            _profile("pp_ours", "inv-1", expiresAt="2029-06-30T12:00:00.000Z"),
        ]
    }
    assert saved_profile_for(contact, "inv-1") == {
        "profile_id": "pp_ours",
        "method": "card",
        "expires_at": datetime(2029, 6, 30, 12, 0, tzinfo=UTC),
    }


def test_the_first_matching_profile_wins() -> None:
    contact = {"paymentProfiles": [_profile("pp_a", "inv-1"), _profile("pp_b", "inv-1")]}
    found = saved_profile_for(contact, "inv-1")
    assert found is not None
    assert found["profile_id"] == "pp_a"


def test_expiry_and_method_are_optional() -> None:
    contact = {"paymentProfiles": [{"id": "pp_1", "sourceOrder": {"externalUniqId": "inv-1"}}]}
    assert saved_profile_for(contact, "inv-1") == {
        "profile_id": "pp_1",
        "method": None,
        "expires_at": None,
    }


def test_an_unparseable_expiry_is_dropped_not_fatal() -> None:
    contact = {"paymentProfiles": [_profile("pp_1", "inv-1", expiresAt="next year", method=7)]}
    assert saved_profile_for(contact, "inv-1") == {
        "profile_id": "pp_1",
        "method": None,
        "expires_at": None,
    }


def test_an_expiry_with_an_offset_is_normalised_to_utc() -> None:
    expiry = "2029-01-01T02:00:00+02:00"
    contact = {"paymentProfiles": [_profile("pp_1", "inv-1", expiresAt=expiry)]}
    found = saved_profile_for(contact, "inv-1")
    assert found is not None
    assert found["expires_at"] == datetime(2029, 1, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "contact",
    [
        {},
        {"paymentProfiles": None},
        {"paymentProfiles": []},
        {"paymentProfiles": 5},
        {"paymentProfiles": {"id": "pp_1", "sourceOrder": {"externalUniqId": "inv-1"}}},
        {"paymentProfiles": [_profile("pp_1", "inv-2")]},
        {"paymentProfiles": [_profile("pp_1", None)]},
        {"paymentProfiles": [_profile(None, "inv-1"), _profile(7, "inv-1")]},
        {"paymentProfiles": ["pp_1", None, {"id": "pp_2", "sourceOrder": "inv-1"}]},
    ],
)
def test_no_profile_for_our_order(contact: dict[str, Any]) -> None:
    assert saved_profile_for(contact, "inv-1") is None
