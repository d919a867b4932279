"""The pure parts of the BTCPay provider (payments.md 4.3-4.5, 4.7): webhook signatures and
bodies, receive-address classification, checkout-link rewriting, invoice snapshots and the
expiry sent with an invoice."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keysat.clock import clock
from keysat.payments.btcpay import (
    BTCPayEvent,
    classify_address,
    expiration_minutes,
    parse_event,
    rewrite_checkout_link,
    signature_valid,
    snapshot_from_invoice,
)
from keysat.payments.provider import InvoiceRequest, Money, Snapshot, SnapshotStatus

SECRET = "KEYSATWEBHOOKSECRET234567ABCDEF"
BODY = json.dumps(
    {"type": "InvoiceSettled", "invoiceId": "Inv1", "storeId": "St1"}, indent=2
).encode()
T0 = datetime(2031, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def hex_sig(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


GOOD_HEX = hex_sig(SECRET, BODY)


# --- signature_valid -----------------------------------------------------------------


def test_signature_over_the_raw_body_is_accepted() -> None:
    assert signature_valid(SECRET, BODY, f"sha256={GOOD_HEX}")


def test_signature_hex_is_compared_case_insensitively() -> None:
    assert signature_valid(SECRET, BODY, f"sha256={GOOD_HEX.upper()}")
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(GOOD_HEX))
    assert signature_valid(SECRET, BODY, f"sha256={mixed}")


def test_signature_key_is_the_utf8_bytes_of_the_secret() -> None:
    secret = "sécret-ünïcode"
    assert signature_valid(secret, BODY, f"sha256={hex_sig(secret, BODY)}")
    latin1 = hmac.new(secret.encode("latin-1"), BODY, hashlib.sha256).hexdigest()
    assert not signature_valid(secret, BODY, f"sha256={latin1}")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param(GOOD_HEX, id="no-prefix"),
        pytest.param(f"SHA256={GOOD_HEX}", id="upper-case-prefix"),
        pytest.param(f"sha256:{GOOD_HEX}", id="colon-instead-of-equals"),
        pytest.param(f"sha1={GOOD_HEX}", id="other-algorithm"),
        pytest.param(f" sha256={GOOD_HEX}", id="leading-space"),
        pytest.param(f"sha256= {GOOD_HEX}", id="space-after-prefix"),
        pytest.param(f"sha256={GOOD_HEX} ", id="trailing-space"),
        pytest.param("sha256=", id="prefix-only"),
        pytest.param(f"sha256={GOOD_HEX[:-1]}", id="63-digits"),
        pytest.param(f"sha256={GOOD_HEX}0", id="65-digits"),
        pytest.param(f"sha256={GOOD_HEX}{GOOD_HEX}", id="128-digits"),
        pytest.param(f"sha256={GOOD_HEX[:-1]}g", id="non-hex-digit"),
        pytest.param(f"sha256={GOOD_HEX[:-2]}-1", id="sign-in-hex"),
        pytest.param(f"sha256=0x{GOOD_HEX[:-2]}", id="0x-prefix"),
        pytest.param(f"sha256={hex_sig('other-secret', BODY)}", id="other-secret"),
        pytest.param(f"sha256={hex_sig(SECRET, BODY + b' ')}", id="other-body"),
        pytest.param(f"sha256={'0' * 64}", id="zeros"),
    ],
)
def test_signature_refusals(header: str | None) -> None:
    assert not signature_valid(SECRET, BODY, header)


def test_signature_is_over_the_bytes_not_the_parsed_json() -> None:
    reserialized = json.dumps(json.loads(BODY)).encode()
    assert reserialized != BODY
    assert not signature_valid(SECRET, reserialized, f"sha256={GOOD_HEX}")
    assert signature_valid(SECRET, reserialized, f"sha256={hex_sig(SECRET, reserialized)}")


# --- parse_event ---------------------------------------------------------------------


def test_parse_event_takes_the_fields_it_uses() -> None:
    body = {
        "deliveryId": "Del1",
        "webhookId": "Wh1",
        "originalDeliveryId": "Del1",
        "isRedelivery": False,
        "type": "InvoiceSettled",
        "timestamp": 1_900_000_000,
        "storeId": "Store1",
        "invoiceId": "Inv1",
        "metadata": {"orderId": "order-1", "productId": "p"},
        "manuallyMarked": False,
        "overPaid": False,
    }
    assert parse_event(json.dumps(body, indent=2, ensure_ascii=False).encode()) == BTCPayEvent(
        type="InvoiceSettled",
        invoice_id="Inv1",
        store_id="Store1",
        order_id="order-1",
        delivery_id="Del1",
    )


def test_parse_event_with_only_type_and_invoice_id() -> None:
    assert parse_event(b'{"type": "InvoiceExpired", "invoiceId": "X"}') == BTCPayEvent(
        type="InvoiceExpired", invoice_id="X", store_id=None, order_id=None, delivery_id=None
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({"metadata": "orderId"}, (None, None, None), id="metadata-not-object"),
        pytest.param({"metadata": {"orderId": 5}}, (None, None, None), id="order-id-number"),
        pytest.param({"metadata": None}, (None, None, None), id="metadata-null"),
        pytest.param({"storeId": 7, "deliveryId": ["d"]}, (None, None, None), id="non-strings"),
        pytest.param(
            {"storeId": "S", "deliveryId": "D", "metadata": {"orderId": "O"}},
            ("S", "O", "D"),
            id="all-strings",
        ),
    ],
)
def test_parse_event_optional_fields_must_be_strings(
    extra: dict[str, Any], expected: tuple[str | None, str | None, str | None]
) -> None:
    event = parse_event(json.dumps({"type": "InvoiceSettled", "invoiceId": "I", **extra}).encode())
    assert event is not None
    assert (event.store_id, event.order_id, event.delivery_id) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'"InvoiceSettled"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b'{"invoiceId": "I"}', id="no-type"),
        pytest.param(b'{"type": "InvoiceSettled"}', id="no-invoice-id"),
        pytest.param(b'{"type": 1, "invoiceId": "I"}', id="type-number"),
        pytest.param(b'{"type": "InvoiceSettled", "invoiceId": 12}', id="invoice-id-number"),
        pytest.param(b'{"type": null, "invoiceId": "I"}', id="type-null"),
        pytest.param(b'{"type": "InvoiceSettled", "invoiceId": ["I"]}', id="invoice-id-list"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
    ],
)
def test_parse_event_refuses_unusable_bodies(raw: bytes) -> None:
    assert parse_event(raw) is None


# --- classify_address ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "regtest"),
        ("BCRT1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KYGT080", "regtest"),
        ("bcrt1", "regtest"),
        ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "testnet"),
        ("TB1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KXPJZSX", "testnet"),
        ("tb1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqp3mvzv", "testnet"),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "mainnet"),
        ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "mainnet"),
        ("bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqzkesfx", "mainnet"),
        ("  bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080\n", "regtest"),
        ("\ttb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx ", "testnet"),
        (" bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4 ", "mainnet"),
        ("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "mainnet"),
        ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "mainnet"),
        ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", "testnet"),
        ("n3GNqMveyvaPvUbH469vDRadqpJMPc84JA", "testnet"),
        ("2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc", "testnet"),
        (" 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa ", "mainnet"),
    ],
)
def test_classify_known_prefixes(address: str, network: str) -> None:
    assert classify_address(address) == network


@pytest.mark.parametrize(
    ("first", "network"), [("1", "mainnet"), ("3", "mainnet"), ("m", "testnet"), ("n", "testnet")]
)
@pytest.mark.parametrize(("length", "known"), [(25, False), (26, True), (35, True), (36, False)])
def test_classify_base58_length_bounds(first: str, network: str, length: int, known: bool) -> None:
    address = first + "z" * (length - 1)
    assert classify_address(address) == (network if known else None)


def test_classify_base58_testnet_p2sh_prefix_bounds() -> None:
    assert classify_address("2" + "A" * 25) == "testnet"
    assert classify_address("2" + "A" * 34) == "testnet"
    assert classify_address("2" + "A" * 24) is None
    assert classify_address("2" + "A" * 35) is None


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("not an address", id="words"),
        pytest.param("lnbcrt500u1pjfakeinvoicefortipsxyz", id="bolt11"),
        pytest.param("bc", id="bc-only"),
        pytest.param("tb", id="tb-only"),
        pytest.param("bcrt", id="bcrt-without-1"),
        pytest.param("4" + "z" * 30, id="base58-first-char-4"),
        pytest.param("x" + "z" * 30, id="base58-first-char-x"),
        pytest.param("M" + "z" * 30, id="base58-upper-case-m"),
        pytest.param("1" + "0" * 30, id="zero-not-base58"),
        pytest.param("1" + "O" * 30, id="capital-o-not-base58"),
        pytest.param("1" + "I" * 30, id="capital-i-not-base58"),
        pytest.param("1" + "l" * 30, id="small-l-not-base58"),
        pytest.param("3J98t1WpEZ73CNmQvie rnyiWrnqRhWNLy", id="inner-space"),
        pytest.param("bitcoin:bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", id="uri"),
        pytest.param("ltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", id="litecoin"),
    ],
)
def test_classify_undetermined(address: str) -> None:
    assert classify_address(address) is None


# --- rewrite_checkout_link ------------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "base", "expected"),
    [
        pytest.param(
            "http://127.0.0.1:23000/i/AbC?lang=en#pay",
            None,
            "http://127.0.0.1:23000/i/AbC?lang=en#pay",
            id="no-public-url",
        ),
        pytest.param(
            "http://127.0.0.1:23000/i/AbC?lang=en#pay",
            "",
            "http://127.0.0.1:23000/i/AbC?lang=en#pay",
            id="empty-public-url",
        ),
        pytest.param(
            "http://127.0.0.1:23000/i/AbC?lang=en#pay",
            "https://pay.example.com",
            "https://pay.example.com/i/AbC?lang=en#pay",
            id="scheme-host-port-replaced",
        ),
        pytest.param(
            "http://btcpay:49392/i/AbC",
            "https://pay.example.com:8443",
            "https://pay.example.com:8443/i/AbC",
            id="public-port-used",
        ),
        pytest.param(
            "https://btcpay.internal/i/AbC",
            "http://pay.example.com/some/path?x=1",
            "http://pay.example.com/i/AbC",
            id="public-path-ignored",
        ),
        pytest.param(
            "http://btcpay:49392/btcpay/i/AbC",
            "https://pay.example.com",
            "https://pay.example.com/btcpay/i/AbC",
            id="link-path-kept",
        ),
        pytest.param(
            "not a url", "https://pay.example.com", "not a url", id="not-a-url-passed-through"
        ),
        pytest.param(
            "/i/AbC", "https://pay.example.com", "/i/AbC", id="relative-link-passed-through"
        ),
        pytest.param(
            "http://[::1/i/AbC",
            "https://pay.example.com",
            "http://[::1/i/AbC",
            id="unparseable-link-passed-through",
        ),
    ],
)
def test_rewrite_checkout_link(link: str, base: str | None, expected: str) -> None:
    assert rewrite_checkout_link(link, base) == expected


# --- snapshot_from_invoice ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Settled", SnapshotStatus.SETTLED),
        ("Complete", SnapshotStatus.SETTLED),
        ("Expired", SnapshotStatus.EXPIRED),
        ("Invalid", SnapshotStatus.INVALID),
        ("New", SnapshotStatus.PENDING),
        ("Processing", SnapshotStatus.PENDING),
        ("Confirmed", SnapshotStatus.PENDING),
        ("Paid", SnapshotStatus.PENDING),
        ("Refunded", SnapshotStatus.PENDING),
        ("", SnapshotStatus.PENDING),
        (None, SnapshotStatus.PENDING),
        (3, SnapshotStatus.PENDING),
        (["Settled"], SnapshotStatus.PENDING),
    ],
)
def test_snapshot_status_table(status: Any, expected: SnapshotStatus) -> None:
    assert snapshot_from_invoice({"status": status}).status is expected


def test_snapshot_status_missing_is_pending() -> None:
    assert snapshot_from_invoice({}) == Snapshot(status=SnapshotStatus.PENDING, amount=None)


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0.00050000", "BTC", Money("SAT", 50_000)),
        ("0.000500004", "BTC", Money("SAT", 50_000)),
        ("0.000500005", "BTC", Money("SAT", 50_001)),
        ("0.00000001", "BTC", Money("SAT", 1)),
        ("0.000000005", "BTC", Money("SAT", 1)),
        ("0.000000004", "BTC", None),
        ("1.23456789", "BTC", Money("SAT", 123_456_789)),
        ("21", "BTC", Money("SAT", 2_100_000_000)),
        ("0", "BTC", None),
        ("0.00000000", "BTC", None),
        ("-0.0005", "BTC", None),
        ("abc", "BTC", None),
        ("", "BTC", None),
        ("NaN", "BTC", None),
        ("Infinity", "BTC", None),
        (None, "BTC", None),
        (True, "BTC", None),
        ({"value": "1"}, "BTC", None),
        ("0.0005", None, None),
        ("0.0005", 5, None),
        ("50000", "SATS", Money("SAT", 50_000)),
        ("50000.5", "SATS", Money("SAT", 50_001)),
        ("50000.4", "SATS", Money("SAT", 50_000)),
        ("0", "SATS", None),
        ("0.4", "SATS", None),
        ("-5", "SATS", None),
        ("25.00", "USD", Money("USD", 2500)),
        ("19.99", "EUR", Money("EUR", 1999)),
        ("0", "USD", None),
        ("-1", "USD", None),
        ("dollars", "USD", None),
    ],
)
def test_snapshot_amount(amount: Any, currency: Any, expected: Money | None) -> None:
    data: dict[str, Any] = {"status": "Settled", "amount": amount, "currency": currency}
    assert snapshot_from_invoice(data).amount == expected


def test_snapshot_amount_missing_is_none() -> None:
    assert snapshot_from_invoice({"status": "Settled", "currency": "BTC"}).amount is None


def test_snapshot_carries_the_order_id_of_the_metadata() -> None:
    data = {
        "status": "Settled",
        "amount": "0.00007000",
        "currency": "BTC",
        "metadata": {"orderId": "our-invoice", "source": "keysat"},
    }
    assert snapshot_from_invoice(data) == Snapshot(
        status=SnapshotStatus.SETTLED,
        amount=Money("SAT", 7000),
        external_order_id="our-invoice",
    )
    assert snapshot_from_invoice({**data, "metadata": {"orderId": 5}}).external_order_id is None
    assert snapshot_from_invoice({**data, "metadata": "x"}).external_order_id is None


# --- expiration_minutes ---------------------------------------------------------------


def request_expiring(expires_at: datetime | None) -> InvoiceRequest:
    return InvoiceRequest(
        amount=Money("SAT", 7000),
        external_order_id="order",
        redirect_url="http://keysat.test/thank-you",
        metadata={},
        expires_at=expires_at,
    )


def test_no_expiry_requested_sends_none() -> None:
    clock.freeze(T0)
    assert expiration_minutes(request_expiring(None)) is None


@pytest.mark.parametrize(
    ("delta", "minutes"),
    [
        (timedelta(minutes=15), 15),
        (timedelta(minutes=14, seconds=59), 15),
        (timedelta(minutes=14, microseconds=1), 15),
        (timedelta(minutes=14), None),
        (timedelta(minutes=13, seconds=30), None),
        (timedelta(minutes=1), None),
        (timedelta(0), None),
        (timedelta(minutes=-30), None),
        (timedelta(minutes=15, microseconds=1), 16),
        (timedelta(minutes=60, seconds=1), 61),
        (timedelta(days=30), 43_200),
        (timedelta(days=3, hours=1, seconds=1), 4_381),
    ],
)
def test_expiration_minutes_round_up_and_floor(delta: timedelta, minutes: int | None) -> None:
    clock.freeze(T0)
    assert expiration_minutes(request_expiring(T0 + delta)) == minutes


def test_expiration_minutes_follow_the_business_clock() -> None:
    clock.freeze(T0)
    request = request_expiring(T0 + timedelta(hours=1))
    assert expiration_minutes(request) == 60
    clock.advance(timedelta(minutes=30, seconds=30))
    assert expiration_minutes(request) == 30
    clock.advance(timedelta(minutes=15))
    assert expiration_minutes(request) == 15
    clock.advance(timedelta(seconds=31))
    assert expiration_minutes(request) is None
