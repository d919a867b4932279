"""The pure rules of a delivery attempt: both signatures, the headers, the outcome of an
attempt and the retry schedule (webhooks.md 5.3-5.5, 7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakes.receiver import (
    StaleTimestamp,
    keysat_signature_valid,
    standard_webhooks_verify,
    whsec,
)
from keysat.webhooks.delivery import (
    MAX_ATTEMPTS,
    Outcome,
    answered,
    delivery_headers,
    endpoint_gone,
    keysat_signature,
    request_failed,
    retry_delay,
    standard_signature,
)

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SECRETS = st.text(min_size=1, max_size=256)
BODIES = st.binary(max_size=2048)


# --- signatures ---------------------------------------------------------------------------


def test_keysat_signature_matches_the_rfc_4231_vector() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    assert keysat_signature("Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_a_hex_looking_secret_is_used_as_text_not_decoded() -> None:
    secret = "ab" * 32
    body = b'{"data":{},"event_type":"product.created","timestamp":"x"}'
    as_text = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    as_bytes = hmac.new(bytes.fromhex(secret), body, hashlib.sha256).hexdigest()
    assert keysat_signature(secret, body) == "sha256=" + as_text
    assert as_text != as_bytes


def test_the_receivers_standard_webhooks_check_accepts_the_published_example() -> None:
    # The example of the Standard Webhooks specification, which proves the receiver's check
    # (used throughout these tests) is a faithful implementation.
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    body = b'{"test": 2432232314}'
    standard_webhooks_verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", headers, body)
    with pytest.raises(ValueError, match="no matching signature"):
        standard_webhooks_verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", headers, body + b" ")
    with pytest.raises(StaleTimestamp):
        standard_webhooks_verify(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", headers, body, now=1614265330 + 301
        )


@given(secret=SECRETS, body=BODIES, timestamp=st.integers(0, 2**40))
def test_standard_signature_verifies_with_the_whsec_form_of_the_one_secret(
    secret: str, body: bytes, timestamp: int
) -> None:
    delivery_id = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
    headers = {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(secret, delivery_id, timestamp, body),
    }
    standard_webhooks_verify(whsec(secret), headers, body)
    assert keysat_signature_valid(secret, body, keysat_signature(secret, body))


def test_standard_signature_is_padded_base64_of_id_timestamp_and_body() -> None:
    signature = standard_signature("s3cret", "abc", 1700000000, b"{}")
    expected = hmac.new(b"s3cret", b"abc.1700000000.{}", hashlib.sha256).digest()
    assert signature == "v1," + base64.b64encode(expected).decode()
    assert signature.endswith("=")  # 32 bytes always pad to 44 characters


def test_delivery_headers_are_exactly_the_spec_set() -> None:
    body = '{"data":{"name":"Café"},"event_type":"product.created"}'.encode()
    headers = delivery_headers(
        secret="topsecret",
        delivery_id="d-1",
        event_type="product.created",
        body=body,
        timestamp=1777636800,
        user_agent="Keysat/1.0.0",
    )
    assert headers == {
        "Content-Type": "application/json",
        "User-Agent": "Keysat/1.0.0",
        "X-Keysat-Event": "product.created",
        "X-Keysat-Delivery": "d-1",
        "X-Keysat-Signature": keysat_signature("topsecret", body),
        "webhook-id": "d-1",
        "webhook-timestamp": "1777636800",
        "webhook-signature": standard_signature("topsecret", "d-1", 1777636800, body),
    }
    assert "topsecret" not in "".join(headers.values())


# --- retry schedule and outcomes ----------------------------------------------------------


def test_retry_schedule_is_the_spec_table() -> None:
    waits = [retry_delay(n) for n in range(1, 11)]
    assert waits == [
        timedelta(seconds=5),
        timedelta(seconds=10),
        timedelta(seconds=30),
        timedelta(minutes=1),
        timedelta(minutes=5),
        timedelta(minutes=15),
        timedelta(minutes=30),
        timedelta(hours=1),
        timedelta(hours=2),
        None,
    ]
    # "attempt n+1 happens at (from the first attempt)"
    elapsed = timedelta(0)
    starts = []
    for wait in waits[:-1]:
        assert wait is not None
        elapsed += wait
        starts.append(int(elapsed.total_seconds()))
    assert starts == [5, 15, 45, 105, 405, 1305, 3105, 6705, 13905]
    assert MAX_ATTEMPTS == 10
    assert retry_delay(11) is None
    with pytest.raises(ValueError):
        retry_delay(0)


def test_a_2xx_answer_delivers() -> None:
    for status in (200, 201, 204, 299):
        assert answered(0, AT, status, "ignored") == Outcome(1, status, None, AT, None)
    assert answered(4, AT, 202, "") == Outcome(5, 202, None, AT, None)


@pytest.mark.parametrize("status", [301, 302, 400, 404, 410, 500, 503, 100])
def test_any_other_answer_is_retried_with_an_excerpt(status: int) -> None:
    outcome = answered(0, AT, status, "é" * 300)
    assert outcome == Outcome(
        attempt_count=1,
        last_status_code=status,
        last_error="non-2xx response: " + "é" * 200,
        delivered_at=None,
        next_attempt_at=AT + timedelta(seconds=5),
    )


def test_the_tenth_failure_is_a_dead_letter() -> None:
    assert answered(8, AT, 500, "") == Outcome(
        9, 500, "non-2xx response: ", None, AT + timedelta(hours=2)
    )
    assert answered(9, AT, 500, "down") == Outcome(10, 500, "non-2xx response: down", None, None)
    assert request_failed(9, AT, "ConnectError: refused") == Outcome(
        10, None, "request error: ConnectError: refused", None, None
    )


def test_request_errors_and_gone_endpoints() -> None:
    assert request_failed(2, AT, "timed out after 10 s") == Outcome(
        3, None, "request error: timed out after 10 s", None, AT + timedelta(seconds=30)
    )
    assert endpoint_gone(0) == Outcome(1, None, "endpoint deleted or disabled", None, None)
    assert endpoint_gone(6) == Outcome(7, None, "endpoint deleted or disabled", None, None)
