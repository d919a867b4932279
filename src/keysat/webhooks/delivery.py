"""The pure rules of one delivery attempt (webhooks.md 5.3-5.5): the headers that sign it,
what its outcome writes, and when the next attempt is due. No database, no network."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

# The wait after failed attempt n (n = 1..9); the tenth failure dead-letters.
RETRY_DELAYS = tuple(
    timedelta(seconds=seconds) for seconds in (5, 10, 30, 60, 300, 900, 1800, 3600, 7200)
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
RESPONSE_EXCERPT_CHARS = 200
ENDPOINT_GONE = "endpoint deleted or disabled"


def _hmac(secret: str, message: bytes) -> bytes:
    # The secret is used as text: its UTF-8 bytes are the key, never hex-decoded (webhooks.md 2).
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def keysat_signature(secret: str, body: bytes) -> str:
    """`X-Keysat-Signature`: `sha256=` + lowercase hex HMAC-SHA256 of the body."""
    return "sha256=" + _hmac(secret, body).hex()


def standard_signature(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature`: `v1,` + padded base64 HMAC-SHA256 of `<id>.<timestamp>.<body>`."""
    message = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(_hmac(secret, message)).decode("ascii")


def delivery_headers(
    *,
    secret: str,
    delivery_id: str,
    event_type: str,
    body: bytes,
    timestamp: int,
    user_agent: str,
) -> dict[str, str]:
    """Every header of one attempt; `timestamp` is the attempt's system time in Unix seconds."""
    return {
        "Content-Type": "application/json",
        "User-Agent": user_agent,
        "X-Keysat-Event": event_type,
        "X-Keysat-Delivery": delivery_id,
        "X-Keysat-Signature": keysat_signature(secret, body),
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(secret, delivery_id, timestamp, body),
    }


def retry_delay(attempt_count: int) -> timedelta | None:
    """The wait after the `attempt_count`-th failed attempt; None once it is a dead letter."""
    if attempt_count < 1:
        raise ValueError("a retry follows at least one attempt")
    if attempt_count >= MAX_ATTEMPTS:
        return None
    return RETRY_DELAYS[attempt_count - 1]


@dataclass(frozen=True)
class Outcome:
    """The columns one attempt writes (webhooks.md 5.4)."""

    attempt_count: int
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    next_attempt_at: datetime | None


def _failed(attempts: int, at: datetime, status: int | None, error: str) -> Outcome:
    delay = retry_delay(attempts)
    return Outcome(
        attempt_count=attempts,
        last_status_code=status,
        last_error=error,
        delivered_at=None,
        next_attempt_at=None if delay is None else at + delay,
    )


def answered(previous_attempts: int, at: datetime, status: int, body_text: str) -> Outcome:
    """The receiver answered: any 2xx delivers; anything else (3xx included) is retried."""
    attempts = previous_attempts + 1
    if 200 <= status < 300:
        return Outcome(attempts, status, None, delivered_at=at, next_attempt_at=None)
    excerpt = body_text[:RESPONSE_EXCERPT_CHARS]
    return _failed(attempts, at, status, f"non-2xx response: {excerpt}")


def request_failed(previous_attempts: int, at: datetime, message: str) -> Outcome:
    """No answer: timeout, connection or TLS error."""
    return _failed(previous_attempts + 1, at, None, f"request error: {message}")


def endpoint_gone(previous_attempts: int) -> Outcome:
    """The endpoint was deleted or disabled: dead letter at once, nothing is sent."""
    return Outcome(previous_attempts + 1, None, ENDPOINT_GONE, None, None)
