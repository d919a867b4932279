"""Recording outgoing events in the outbox (webhooks.md 3, 4)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from keysat.clock import now
from keysat.webhooks.models import WebhookEvent
from keysat.wire import format_ts, new_id


def envelope_json(event_type: str, timestamp: str, data: dict[str, Any]) -> str:
    """Compact, keys sorted at every level, non-ASCII kept as is: the exact bytes sent."""
    body = {"data": data, "event_type": event_type, "timestamp": timestamp}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_event(session: AsyncSession, event_type: str, data: dict[str, Any]) -> WebhookEvent:
    """Add the event to the caller's transaction: it exists if and only if the change commits."""
    at = now()
    event = WebhookEvent(
        id=new_id(),
        event_type=event_type,
        payload_json=envelope_json(event_type, format_ts(at), data),
        created_at=at,
    )
    session.add(event)
    return event
