"""The sandbox test clock (billing.md 9.3): an offset on the business clock, shared by
every process through the settings table and re-read by each at most once a second."""

from __future__ import annotations

import math
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.background import Repeating
from keysat.clock import clock, now
from keysat.db import Database
from keysat.operator.models import Setting
from keysat.operator.service import get_setting, put_setting
from keysat.wire import format_ts

OFFSET_SETTING = "sandbox_clock_offset_seconds"
REFRESH_SECONDS = 1.0
# Longer than a move's transaction takes to commit after it set the offset here.
MOVE_SETTLE_SECONDS = 2.0
MAX_SECONDS = 31_622_400
MAX_DAYS = 366


def parse_offset(stored: str | None) -> int:
    return int(stored) if stored and stored.lstrip("-").isdigit() else 0


def clock_json() -> dict[str, Any]:
    return {
        "now": format_ts(now()),
        "real_now": format_ts(clock.real_now()),
        "offset_seconds": clock.sandbox_offset_seconds,
    }


class SandboxClock:
    def __init__(self, db: Database, enabled: bool) -> None:
        self._db = db
        self.enabled = enabled
        self._follower = Repeating("sandbox-clock", REFRESH_SECONDS, self.load)
        self._last_move = -math.inf

    async def load(self) -> None:
        """Adopt the shared offset (another process may have moved it). A read close to a
        move made in this process is dropped: it may predate the move's commit, and
        adopting it would undo the move here until the next refresh."""
        if not self.enabled:
            return
        started = time.monotonic()
        async with self._db.read() as session:
            stored = await get_setting(session, OFFSET_SETTING)
        if self._last_move < started - MOVE_SETTLE_SECONDS:
            clock.set_sandbox_offset(parse_offset(stored))

    async def stored_offset(self, session: AsyncSession) -> int:
        """The shared offset, locked for the caller's transaction, so advances from two
        processes add up instead of overwriting each other."""
        query = sa.select(Setting.value).where(Setting.key == OFFSET_SETTING).with_for_update()
        stored = (await session.execute(query)).scalar_one_or_none()
        return parse_offset(stored)

    async def move(self, session: AsyncSession, offset_seconds: int) -> None:
        await put_setting(session, OFFSET_SETTING, str(offset_seconds))
        self._last_move = time.monotonic()
        clock.set_sandbox_offset(offset_seconds)

    def start(self) -> None:
        if self.enabled:
            self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()
