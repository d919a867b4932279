"""The delivery worker (webhooks.md 5.2-5.5): claim due deliveries, send them, record the
outcome.

A tick claims its rows in one short write transaction (a conditional update of
`next_attempt_at`, under `FOR UPDATE SKIP LOCKED` on PostgreSQL), sends the requests with no
transaction open, then records each outcome with an update that only applies while the row
still carries this tick's claim. Two processes therefore never send the same attempt, a
process that dies mid-attempt leaves the row to be retried when its claim runs out, and an
admin retry during an attempt is never overwritten by that attempt's outcome.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa

from keysat import __version__
from keysat.clock import clock
from keysat.db import Database
from keysat.jobs import Job
from keysat.webhooks.delivery import (
    Outcome,
    answered,
    delivery_headers,
    endpoint_gone,
    request_failed,
)
from keysat.webhooks.models import WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)

BATCH = 25
CLAIM = timedelta(seconds=60)
TIMEOUT_SECONDS = 10.0
# Enough of an error answer for the 200-character excerpt in `last_error`, in any encoding.
RESPONSE_READ_BYTES = 4096
INTERVAL = timedelta(seconds=5)


@dataclass(frozen=True)
class Claimed:
    """One delivery this tick owns until `claimed_until`, with its endpoint as read then."""

    id: str
    event_type: str
    payload_json: str
    attempt_count: int
    claimed_until: datetime
    url: str
    secret: str


class DeliveryWorker:
    """`tick(at)` runs one pass at system time `at` (billing.md 9.1, 9.3)."""

    def __init__(
        self, db: Database, http: httpx.AsyncClient, *, timeout_seconds: float = TIMEOUT_SECONDS
    ) -> None:
        self._db = db
        self._http = http
        self._timeout = timeout_seconds
        self._user_agent = f"Keysat/{__version__}"

    async def tick(self, at: datetime) -> int:
        """Attempt up to one batch of due deliveries; the number of requests sent."""
        claimed = await self._claim(at)
        await asyncio.gather(*(self._attempt(item, at) for item in claimed))
        return len(claimed)

    async def _claim(self, at: datetime) -> list[Claimed]:
        query = (
            sa.select(
                WebhookDelivery.id,
                WebhookDelivery.event_type,
                WebhookDelivery.payload_json,
                WebhookDelivery.attempt_count,
                WebhookDelivery.next_attempt_at,
                WebhookEndpoint.url,
                WebhookEndpoint.secret,
                WebhookEndpoint.active,
            )
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.delivered_at.is_(None),
                WebhookDelivery.next_attempt_at.is_not(None),
                WebhookDelivery.next_attempt_at <= at,
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.created_at)
            .limit(BATCH)
        )
        if not self._db.is_sqlite:
            # Rows another process is claiming right now are skipped, not waited for.
            query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
        claimed: list[Claimed] = []
        async with self._db.write() as session:
            for row in (await session.execute(query)).all():
                still_due = sa.and_(
                    WebhookDelivery.id == row.id,
                    WebhookDelivery.next_attempt_at == row.next_attempt_at,
                    WebhookDelivery.attempt_count == row.attempt_count,
                )
                if not row.active:
                    await session.execute(
                        _write_outcome(still_due, endpoint_gone(row.attempt_count))
                    )
                    continue
                taken = await session.execute(
                    sa.update(WebhookDelivery).where(still_due).values(next_attempt_at=at + CLAIM)
                )
                if taken.rowcount:  # type: ignore[attr-defined]
                    claimed.append(
                        Claimed(
                            id=row.id,
                            event_type=row.event_type,
                            payload_json=row.payload_json,
                            attempt_count=row.attempt_count,
                            claimed_until=at + CLAIM,
                            url=row.url,
                            secret=row.secret,
                        )
                    )
        return claimed

    async def _attempt(self, item: Claimed, at: datetime) -> None:
        body = item.payload_json.encode("utf-8")
        headers = delivery_headers(
            secret=item.secret,
            delivery_id=item.id,
            event_type=item.event_type,
            body=body,
            timestamp=int(at.timestamp()),
            user_agent=self._user_agent,
        )
        try:
            async with asyncio.timeout(self._timeout):
                status, text = await self._post(item.url, body, headers)
            outcome = answered(item.attempt_count, at, status, text)
        except TimeoutError:
            outcome = request_failed(item.attempt_count, at, f"timed out after {self._timeout:g} s")
        except Exception as exc:
            # Connection refused, TLS, a broken answer, a URL httpx cannot use: all are
            # failed attempts, counted and retried like any other.
            outcome = request_failed(item.attempt_count, at, describe(exc))
        if outcome.delivered_at is None:
            log.warning(
                "webhook delivery %s (%s) attempt %d failed: %s",
                item.id,
                item.event_type,
                outcome.attempt_count,
                outcome.last_error,
            )
        async with self._db.write() as session:
            await session.execute(
                _write_outcome(
                    sa.and_(
                        WebhookDelivery.id == item.id,
                        WebhookDelivery.next_attempt_at == item.claimed_until,
                        WebhookDelivery.attempt_count == item.attempt_count,
                    ),
                    outcome,
                )
            )

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """The status and the start of the answer; the whole answer must arrive intact."""
        request = self._http.build_request(
            "POST", url, content=body, headers=headers, timeout=self._timeout
        )
        response = await self._http.send(request, stream=True, follow_redirects=False)
        try:
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received += chunk
                if len(received) >= RESPONSE_READ_BYTES:
                    break
        finally:
            await response.aclose()
        return response.status_code, received.decode("utf-8", errors="replace")


def describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _write_outcome(condition: sa.ColumnElement[bool], outcome: Outcome) -> sa.Update:
    return (
        sa.update(WebhookDelivery)
        .where(condition)
        .values(
            attempt_count=outcome.attempt_count,
            last_status_code=outcome.last_status_code,
            last_error=outcome.last_error,
            delivered_at=outcome.delivered_at,
            next_attempt_at=outcome.next_attempt_at,
        )
    )


def webhook_jobs(db: Database, http: httpx.AsyncClient) -> list[Job]:
    worker = DeliveryWorker(db, http)

    async def deliver(_business_now: datetime) -> int:
        # Delivery runs on the system clock, which the sandbox test clock never moves.
        return await worker.tick(clock.real_now())

    return [Job("webhook_delivery", INTERVAL, INTERVAL, deliver)]
