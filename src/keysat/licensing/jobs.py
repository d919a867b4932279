"""Background work of the licensing domain: the buffered validation-log writer.

Validate answers without waiting for its log row. Rows are kept in memory and written in
one transaction every second (or sooner when 500 are waiting). A crash loses at most the
rows of the last second; a failed write is logged and never changes an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa

from keysat.db import Database
from keysat.licensing.models import ValidationLog

log = logging.getLogger(__name__)

FLUSH_INTERVAL_SECONDS = 1.0
FLUSH_THRESHOLD = 500
# Beyond this many unwritten rows (a database outage) the oldest are dropped, so memory
# stays bounded; validation answers never depend on the log.
MAX_PENDING = 100_000


@dataclass(frozen=True)
class ValidationRecord:
    license_id: str | None
    product_id: str | None
    fingerprint: str | None
    machine_id: str | None
    result: str
    reason_detail: str | None
    client_ip: str | None
    user_agent: str | None
    occurred_at: datetime


class ValidationLogWriter:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: list[ValidationRecord] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    def add(self, record: ValidationRecord) -> None:
        self._pending.append(record)
        if len(self._pending) > MAX_PENDING:
            del self._pending[: len(self._pending) - MAX_PENDING]
        if len(self._pending) >= FLUSH_THRESHOLD:
            self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        async with self._flush_lock:
            batch, self._pending = self._pending, []
            if not batch:
                return 0
            try:
                async with self._db.write() as session:
                    await session.execute(
                        sa.insert(ValidationLog), [asdict(record) for record in batch]
                    )
            except Exception:
                log.exception("validation log: %d rows could not be written", len(batch))
                self._pending[:0] = batch
                return 0
            return len(batch)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="validation-log-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=FLUSH_INTERVAL_SECONDS)
            self._wakeup.clear()
            await self.flush()
