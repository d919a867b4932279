"""Background work of the licensing domain: write-behind of validate's bookkeeping.

Validate answers without waiting for its writes. Validation-log rows and heartbeat
refreshes of already active machines are kept in memory and written in one transaction
every second (or sooner when 500 log rows are waiting). A crash loses at most the last
second of them: log rows, and how recently a machine was last seen. Nothing that decides
an answer (licenses, new machines, seat counts) is ever deferred. A failed write is
logged and retried with the next batch; it never changes an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from keysat.db import Database, sqlite_timestamp
from keysat.licensing.models import Machine, ValidationLog

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


@dataclass(frozen=True)
class MachineSeen:
    at: datetime
    client_ip: str | None


class WriteBehind:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._records: list[ValidationRecord] = []
        self._seen: dict[str, MachineSeen] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    def record(self, record: ValidationRecord) -> None:
        self._records.append(record)
        if len(self._records) > MAX_PENDING:
            del self._records[: len(self._records) - MAX_PENDING]
        if len(self._records) >= FLUSH_THRESHOLD:
            self._wakeup.set()

    def machine_seen(self, machine_id: str, at: datetime, client_ip: str | None) -> None:
        """Refresh an active machine's last heartbeat (and address, when known) soon."""
        previous = self._seen.get(machine_id)
        ip = client_ip if client_ip is not None or previous is None else previous.client_ip
        self._seen[machine_id] = MachineSeen(at=at, client_ip=ip)

    @property
    def pending(self) -> int:
        return len(self._records) + len(self._seen)

    async def flush(self) -> int:
        async with self._flush_lock:
            records, self._records = self._records, []
            seen, self._seen = self._seen, {}
            if not records and not seen:
                return 0
            try:
                if self._db.sqlite_path is not None:
                    # Off the event loop: a batch of hundreds of rows would otherwise stall
                    # every request in flight for the time it takes to encode them.
                    async with self._db.writer_turn():
                        await asyncio.to_thread(_write_sqlite, self._db.sqlite_path, records, seen)
                else:
                    await self._write_session(records, seen)
            except Exception:
                log.exception(
                    "write-behind: %d log rows and %d machine refreshes could not be written",
                    len(records),
                    len(seen),
                )
                self._records[:0] = records
                for machine_id, update in seen.items():
                    self._seen.setdefault(machine_id, update)
                return 0
            return len(records) + len(seen)

    async def _write_session(
        self, records: list[ValidationRecord], seen: dict[str, MachineSeen]
    ) -> None:
        async with self._db.write() as session:
            if records:
                await session.execute(sa.insert(ValidationLog), [vars(r) for r in records])
            for machine_id, update in seen.items():
                values: dict[str, object] = {"last_heartbeat_at": update.at}
                if update.client_ip is not None:
                    values["ip_last_seen"] = update.client_ip
                await session.execute(
                    sa.update(Machine)
                    .where(
                        Machine.id == machine_id,
                        Machine.deactivated_at.is_(None),
                        Machine.last_heartbeat_at < update.at,
                    )
                    .values(**values)
                )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="licensing-write-behind")

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


_INSERT_LOG = (
    "INSERT INTO validation_log (license_id, product_id, fingerprint, machine_id, result, "
    "reason_detail, client_ip, user_agent, occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_TOUCH_MACHINE = (
    "UPDATE machines SET last_heartbeat_at = ?, ip_last_seen = coalesce(?, ip_last_seen) "
    "WHERE id = ? AND deactivated_at IS NULL AND last_heartbeat_at < ?"
)


def _write_sqlite(path: str, records: list[ValidationRecord], seen: dict[str, MachineSeen]) -> None:
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            _INSERT_LOG,
            [
                (
                    r.license_id,
                    r.product_id,
                    r.fingerprint,
                    r.machine_id,
                    r.result,
                    r.reason_detail,
                    r.client_ip,
                    r.user_agent,
                    sqlite_timestamp(r.occurred_at),
                )
                for r in records
            ],
        )
        connection.executemany(
            _TOUCH_MACHINE,
            [
                (sqlite_timestamp(u.at), u.client_ip, machine_id, sqlite_timestamp(u.at))
                for machine_id, u in seen.items()
            ],
        )
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    finally:
        connection.close()
