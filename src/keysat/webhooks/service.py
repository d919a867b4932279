"""Outgoing webhooks: recording events, dispatching them to endpoints, endpoint and delivery
administration (webhooks.md 2-6; admin-api.md 13).

Endpoint and delivery times are on the system clock (billing.md 9.3): delivery scheduling is
operational. Only the envelope's `timestamp` is on the business clock.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction

from keysat.access.actor import Actor
from keysat.clock import clock, now
from keysat.errors import bad_request, not_found
from keysat.operator.service import record_audit
from keysat.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from keysat.webhooks.schemas import EndpointCreate
from keysat.wire import format_optional_ts, format_ts, new_id, normalize_id

URL_MAX = 2048
SECRET_MAX = 256
DELIVERY_STATUSES = ("pending", "delivered", "failed", "all")


def envelope_json(event_type: str, timestamp: str, data: dict[str, Any]) -> str:
    """Compact, keys sorted at every level, non-ASCII kept as is: the exact bytes sent."""
    body = {"data": data, "event_type": event_type, "timestamp": timestamp}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_event(session: AsyncSession, event_type: str, data: dict[str, Any]) -> WebhookEvent:
    """Add the event to the caller's transaction: it exists if and only if the change commits.

    Its deliveries are added in the same transaction when the session flushes
    (`_dispatch_flushed_events`)."""
    at = now()
    event = WebhookEvent(
        id=new_id(),
        event_type=event_type,
        payload_json=envelope_json(event_type, format_ts(at), data),
        created_at=at,
    )
    session.add(event)
    return event


# --- dispatch (webhooks.md 5.1) -----------------------------------------------------------


def subscribed(event_types: Any, event_type: str) -> bool:
    """`"*"` or the exact name; anything that is not a list of names matches nothing."""
    if not isinstance(event_types, list):
        return False
    return "*" in event_types or event_type in event_types


@sa.event.listens_for(Session, "after_flush")
def _dispatch_flushed_events(session: Session, _flush: UOWTransaction) -> None:
    """Fan each newly inserted event out to the endpoints subscribed at this moment.

    `record_event` is synchronous and called from every domain, so it cannot query the
    endpoints itself. The flush that inserts the event is the first point where it can, still
    inside the caller's transaction: the deliveries commit or roll back with the change, and
    the unique (event, endpoint) key refuses a second copy.
    """
    events = [item for item in session.new if isinstance(item, WebhookEvent)]
    if not events:
        return
    connection = session.connection()
    endpoints = connection.execute(
        sa.select(WebhookEndpoint.id, WebhookEndpoint.event_types)
        .where(WebhookEndpoint.active.is_(True))
        # PostgreSQL: an endpoint deleted meanwhile must wait for this transaction rather
        # than fail its foreign key, which would fail the caller's change.
        .with_for_update(read=True, key_share=True)
    ).all()
    at = clock.real_now()
    rows = [
        {
            "id": new_id(),
            "endpoint_id": endpoint_id,
            "event_id": event.id,
            "event_type": event.event_type,
            "payload_json": event.payload_json,
            "attempt_count": 0,
            "next_attempt_at": at,
            "created_at": at,
        }
        for event in events
        for endpoint_id, event_types in endpoints
        if subscribed(event_types, event.event_type)
    ]
    if rows:
        connection.execute(sa.insert(WebhookDelivery), rows)


# --- endpoints (webhooks.md 2) ------------------------------------------------------------


def endpoint_json(endpoint: WebhookEndpoint, *, include_secret: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "active": endpoint.active,
        "description": endpoint.description,
        "created_at": format_ts(endpoint.created_at),
        "updated_at": format_ts(endpoint.updated_at),
    }
    if include_secret:
        body["secret"] = endpoint.secret
    return body


def checked_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if (
        parts is None
        or not port_ok
        or len(url) > URL_MAX
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url)
    ):
        raise bad_request(
            f"field 'url' must be an absolute http:// or https:// URL of at most {URL_MAX} "
            "characters"
        )
    return url


def checked_secret(secret: str | None) -> str:
    if secret is None:
        return secrets.token_hex(32)
    trimmed = secret.strip()
    if not 1 <= len(trimmed) <= SECRET_MAX:
        raise bad_request(f"field 'secret' must be 1 to {SECRET_MAX} characters after trimming")
    return trimmed


def checked_event_types(event_types: list[str] | None) -> list[str]:
    if event_types is None:
        return ["*"]
    if not event_types:
        raise bad_request("field 'event_types' must name at least one event type, or \"*\"")
    if any(not name.strip() for name in event_types):
        raise bad_request("field 'event_types' must hold non-empty strings")
    return event_types


async def create_endpoint(
    session: AsyncSession, actor: Actor, body: EndpointCreate
) -> WebhookEndpoint:
    at = clock.real_now()
    endpoint = WebhookEndpoint(
        id=new_id(),
        url=checked_url(body.url),
        secret=checked_secret(body.secret),
        event_types=checked_event_types(body.event_types),
        active=True,
        description=body.description or "",
        created_at=at,
        updated_at=at,
    )
    session.add(endpoint)
    record_audit(
        session,
        actor,
        "webhook_endpoint.create",
        "webhook_endpoint",
        endpoint.id,
        {"url": endpoint.url, "event_types": endpoint.event_types},
    )
    return endpoint


async def list_endpoints(session: AsyncSession) -> Sequence[WebhookEndpoint]:
    query = sa.select(WebhookEndpoint).order_by(
        WebhookEndpoint.created_at.desc(), WebhookEndpoint.id.desc()
    )
    return (await session.execute(query)).scalars().all()


async def endpoint_by_id(session: AsyncSession, raw_id: str) -> WebhookEndpoint:
    endpoint_id = normalize_id(raw_id)
    endpoint = None if endpoint_id is None else await session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise not_found(f"webhook endpoint {raw_id}")
    return endpoint


async def set_endpoint_active(
    session: AsyncSession, actor: Actor, raw_id: str, active: bool
) -> None:
    """A disabled endpoint gets no new deliveries; its queued ones dead-letter when due."""
    endpoint = await endpoint_by_id(session, raw_id)
    endpoint.active = active
    endpoint.updated_at = clock.real_now()
    record_audit(
        session,
        actor,
        "webhook_endpoint.set_active",
        "webhook_endpoint",
        endpoint.id,
        {"active": active},
    )


async def delete_endpoint(session: AsyncSession, actor: Actor, raw_id: str) -> int:
    """Delete the endpoint and its deliveries together; the number of deliveries removed."""
    endpoint = await endpoint_by_id(session, raw_id)
    removed = await session.execute(
        sa.delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    )
    await session.delete(endpoint)
    record_audit(
        session,
        actor,
        "webhook_endpoint.delete",
        "webhook_endpoint",
        endpoint.id,
        {"url": endpoint.url},
    )
    return int(removed.rowcount)  # type: ignore[attr-defined]


# --- deliveries (webhooks.md 5.6, 6) ------------------------------------------------------


def delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "event_type": delivery.event_type,
        "payload_json": delivery.payload_json,
        "attempt_count": delivery.attempt_count,
        "next_attempt_at": format_optional_ts(delivery.next_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "delivered_at": format_optional_ts(delivery.delivered_at),
        "created_at": format_ts(delivery.created_at),
    }


def status_condition(status: str) -> sa.ColumnElement[bool] | None:
    """The derived states of webhooks.md 5.6 as a filter; None for `all`."""
    undelivered = WebhookDelivery.delivered_at.is_(None)
    if status == "pending":
        return sa.and_(undelivered, WebhookDelivery.next_attempt_at.is_not(None))
    if status == "delivered":
        return WebhookDelivery.delivered_at.is_not(None)
    if status == "failed":
        return sa.and_(
            undelivered,
            WebhookDelivery.next_attempt_at.is_(None),
            WebhookDelivery.attempt_count > 0,
        )
    if status == "all":
        return None
    raise bad_request(f"query parameter 'status' must be one of {', '.join(DELIVERY_STATUSES)}")


async def list_deliveries(
    session: AsyncSession, *, endpoint_id: str | None, status: str, limit: int
) -> Sequence[WebhookDelivery]:
    condition = status_condition(status)
    query = (
        sa.select(WebhookDelivery)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .limit(limit)
    )
    if condition is not None:
        query = query.where(condition)
    if endpoint_id is not None:
        canonical = normalize_id(endpoint_id)
        if canonical is None:
            return []
        query = query.where(WebhookDelivery.endpoint_id == canonical)
    return (await session.execute(query)).scalars().all()


async def retry_delivery(
    session: AsyncSession, actor: Actor, raw_id: str, at: datetime
) -> WebhookDelivery:
    """Requeue any delivery, delivered or dead: same id and body, a fresh set of attempts."""
    delivery_id = normalize_id(raw_id)
    delivery = None if delivery_id is None else await session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise not_found(f"webhook delivery '{raw_id}'")
    delivery.attempt_count = 0
    delivery.delivered_at = None
    delivery.last_error = None
    delivery.last_status_code = None
    delivery.next_attempt_at = at
    record_audit(
        session,
        actor,
        "webhook_delivery.retry",
        "webhook_delivery",
        delivery.id,
        {"endpoint_id": delivery.endpoint_id, "event_type": delivery.event_type},
    )
    return delivery
