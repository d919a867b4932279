"""Community analytics (admin-api.md 15.4-15.6, billing.md 10): the opt-in settings, the
heartbeat body, and the daily job that sends it.

The heartbeat says how big an install is, coarsely, and nothing that identifies it: counts
are rounded down to a multiple of 5 and uptime is reported as a bucket.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat import __version__
from keysat.access.actor import Actor
from keysat.access.selflicense import SelfLicensing
from keysat.access.tier import licensed_tier
from keysat.billing.models import Invoice
from keysat.catalog.models import Product
from keysat.clock import clock
from keysat.db import Database
from keysat.errors import bad_request
from keysat.jobs import Job
from keysat.licensing.models import License
from keysat.operator.service import delete_setting, get_setting, put_setting, record_audit
from keysat.wire import format_ts

log = logging.getLogger(__name__)

ENABLED = "community_analytics_enabled"
INSTALL_UUID = "community_install_uuid"
COLLECTOR_URL = "community_collector_url"
LAST_SENT = "community_last_sent_at"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
SCHEMA_VERSION = 1
COLLECTOR_URL_MAX = 2048
FIRST_DELAY = timedelta(seconds=300)
SEND_INTERVAL = timedelta(seconds=86_400)
TIMEOUT_SECONDS = 10.0
# Upper bounds (exclusive, in seconds) of the uptime buckets, smallest first.
UPTIME_BUCKETS = ((86_400, "<1d"), (604_800, "1-7d"), (2_419_200, "1-4w"))


class HeartbeatFailed(Exception):
    """The collector could not be reached or did not answer 2xx; the job records it."""


# --- pure rules ----------------------------------------------------------------------------


def is_enabled(stored: str | None) -> bool:
    """`1`, or `true` in any case, means on; anything else (or nothing) means off."""
    return stored is not None and (stored.strip() == "1" or stored.strip().lower() == "true")


def rounded_down(count: int) -> int:
    return count - count % 5


def uptime_bucket(seconds: float) -> str:
    for limit, bucket in UPTIME_BUCKETS:
        if seconds < limit:
            return bucket
    return ">4w"


def parse_sent_at(stored: str) -> datetime:
    """The last success; an unreadable value counts as long ago, so sending resumes."""
    try:
        return datetime.fromisoformat(stored)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def clean_collector_url(value: str | None) -> str | None:
    text = (value or "").strip()
    if not text:
        return None
    if not text.lower().startswith(("http://", "https://")) or len(text) > COLLECTOR_URL_MAX:
        raise bad_request("collector_url must be an http:// or https:// URL")
    return text


def heartbeat_body(
    install_uuid: str, tier: str, counts: tuple[int, int, int], uptime_seconds: float
) -> dict[str, Any]:
    """The exact body sent (billing.md 10); `counts` are products, active licenses and
    settled invoices, before rounding."""
    products, active_licenses, settled_invoices = counts
    return {
        "install_uuid": install_uuid,
        "daemon_version": __version__,
        "tier": tier,
        "counts": {
            "products": rounded_down(products),
            "active_licenses": rounded_down(active_licenses),
            "settled_invoices": rounded_down(settled_invoices),
        },
        "uptime_bucket": uptime_bucket(uptime_seconds),
        "schema_version": SCHEMA_VERSION,
    }


# --- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    enabled: bool
    collector_url: str | None
    install_uuid: str | None


async def read_config(session: AsyncSession) -> Config:
    return Config(
        enabled=is_enabled(await get_setting(session, ENABLED)),
        collector_url=await get_setting(session, COLLECTOR_URL) or None,
        install_uuid=await get_setting(session, INSTALL_UUID) or None,
    )


async def _ensure_install_uuid(session: AsyncSession) -> str:
    existing = await get_setting(session, INSTALL_UUID)
    if existing:
        return existing
    created = str(uuid.uuid4())
    await put_setting(session, INSTALL_UUID, created)
    return created


async def configure(
    session: AsyncSession, actor: Actor, enabled: bool, collector_url: str | None
) -> dict[str, Any]:
    """admin-api.md 15.5: both settings are written; opting in creates the install UUID,
    which then survives toggles until a reset."""
    url = clean_collector_url(collector_url)
    await put_setting(session, ENABLED, "1" if enabled else "0")
    if url is None:
        await delete_setting(session, COLLECTOR_URL)
    else:
        await put_setting(session, COLLECTOR_URL, url)
    if enabled:
        await _ensure_install_uuid(session)
    record_audit(
        session,
        actor,
        "community_analytics.enable" if enabled else "community_analytics.disable",
        "setting",
        ENABLED,
        {"enabled": enabled, "collector_url_set": url is not None},
    )
    return {"enabled": enabled, "collector_url": url}


async def reset(session: AsyncSession, actor: Actor) -> None:
    await delete_setting(session, INSTALL_UUID)
    record_audit(session, actor, "community_analytics.reset", "setting", INSTALL_UUID, {})


async def install_counts(session: AsyncSession) -> tuple[int, int, int]:
    async def count(query: sa.Select[Any]) -> int:
        return int((await session.execute(query)).scalar_one())

    return (
        await count(sa.select(sa.func.count()).select_from(Product)),
        await count(sa.select(sa.func.count()).where(License.status == "active")),
        await count(sa.select(sa.func.count()).where(Invoice.status == "settled")),
    )


# --- the heartbeat -------------------------------------------------------------------------


class CommunityHeartbeat:
    """Builds and sends this process's heartbeat; `started_at` (system time) dates its
    uptime. `tick(at)` runs one pass of the job at system time `at`."""

    def __init__(
        self,
        db: Database,
        http: httpx.AsyncClient,
        self_license: SelfLicensing,
        started_at: datetime,
    ) -> None:
        self._db = db
        self._http = http
        self._self_license = self_license
        self._started_at = started_at

    async def body(self, session: AsyncSession, install_uuid: str, at: datetime) -> dict[str, Any]:
        # The self-license's own tier, also in sandbox mode (billing.md 10).
        return heartbeat_body(
            install_uuid,
            licensed_tier(self._self_license.current),
            await install_counts(session),
            (at - self._started_at).total_seconds(),
        )

    async def settings_view(self, at: datetime) -> dict[str, Any]:
        """GET /v1/admin/community-analytics: the settings and exactly what would be sent."""
        async with self._db.read() as session:
            config = await read_config(session)
            preview = await self.body(session, config.install_uuid or ZERO_UUID, at)
        return {
            "enabled": config.enabled,
            "collector_url": config.collector_url,
            "install_uuid": config.install_uuid,
            "preview_heartbeat": preview,
        }

    async def tick(self, at: datetime) -> bool:
        """Send when opted in with a URL and the last success across all processes is at
        least a day old; True when a heartbeat was accepted."""
        async with self._db.read() as session:
            config = await read_config(session)
            last_sent = await get_setting(session, LAST_SENT)
        if not config.enabled or config.collector_url is None:
            return False
        if last_sent is not None and at - parse_sent_at(last_sent) < SEND_INTERVAL:
            return False
        async with self._db.write() as session:
            # A reset while opted in starts a new identity with the next heartbeat.
            install_uuid = await _ensure_install_uuid(session)
            body = await self.body(session, install_uuid, at)
        try:
            response = await self._http.post(
                config.collector_url, json=body, timeout=TIMEOUT_SECONDS
            )
        except httpx.HTTPError as exc:
            raise HeartbeatFailed(f"collector unreachable: {type(exc).__name__}") from None
        if not response.is_success:
            raise HeartbeatFailed(f"collector answered HTTP {response.status_code}")
        async with self._db.write() as session:
            await put_setting(session, LAST_SENT, format_ts(at))
        return True

    def job(self) -> Job:
        async def send(_business_now: datetime) -> bool:
            # Operational work: the system clock, which the sandbox test clock never moves.
            return await self.tick(clock.real_now())

        return Job("community_heartbeat", FIRST_DELAY, SEND_INTERVAL, send)
