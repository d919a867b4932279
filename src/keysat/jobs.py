"""The background job runner (billing.md 9.1, 9.2).

Every process with workers on runs every job on its schedule; before a tick it takes the
job's lease in `job_leases` with one conditional update, so only one process ticks a job at
a time. Leases and scheduling use the system clock; the work itself reads the business
clock. `run_now` runs one tick on demand (the admin "run" call), workers or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from keysat.clock import clock, now
from keysat.db import Database
from keysat.errors import conflict, not_found
from keysat.operator.models import JobLease
from keysat.wire import format_optional_ts

log = logging.getLogger(__name__)

# The order of billing.md 9.1, which the admin list follows.
JOB_ORDER = (
    "reconciler",
    "renewals",
    "webhook_delivery",
    "tips",
    "emails",
    "redemption_reaper",
    "session_reaper",
    "authorize_state_pruning",
    "self_license_refresh",
    "community_heartbeat",
)
MIN_LEASE = timedelta(seconds=60)
ERROR_TEXT_MAX = 500


@dataclass(frozen=True)
class Job:
    name: str
    first_delay: timedelta
    interval: timedelta
    tick: Callable[[datetime], Awaitable[Any]]

    @property
    def lease_length(self) -> timedelta:
        return max(2 * self.interval, MIN_LEASE)


class JobRunner:
    def __init__(self, db: Database, jobs: Sequence[Job]) -> None:
        self._db = db
        self._jobs = {job.name: job for job in sorted(jobs, key=lambda j: JOB_ORDER.index(j.name))}
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def names(self) -> list[str]:
        return list(self._jobs)

    def job(self, name: str) -> Job:
        job = self._jobs.get(name)
        if job is None:
            raise not_found(f"job '{name}'")
        return job

    # --- leases ----------------------------------------------------------------------------

    async def _ensure_rows(self) -> None:
        async with self._db.write() as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            for name in self._jobs:
                await session.execute(insert(JobLease).values(name=name).on_conflict_do_nothing())

    async def _take(self, job: Job) -> bool:
        started = clock.real_now()
        async with self._db.write() as session:
            result = await session.execute(
                sa.update(JobLease)
                .where(
                    JobLease.name == job.name,
                    sa.or_(JobLease.holder.is_(None), JobLease.lease_until < started),
                )
                .values(
                    holder=self.holder,
                    lease_until=started + job.lease_length,
                    last_started_at=started,
                )
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def _release(self, job: Job, error: str | None) -> None:
        finished = clock.real_now()
        async with self._db.write() as session:
            await session.execute(
                sa.update(JobLease)
                .where(JobLease.name == job.name, JobLease.holder == self.holder)
                .values(
                    holder=None,
                    lease_until=None,
                    last_finished_at=finished,
                    last_status="error" if error else "ok",
                    last_error=error,
                    next_run_at=finished + job.interval,
                )
            )

    async def _tick(self, job: Job) -> bool:
        """One leased tick; False when another holder has the lease."""
        await self._ensure_rows()
        if not await self._take(job):
            return False
        error: str | None = None
        try:
            await job.tick(now())
        except Exception as exc:
            log.exception("job %s failed", job.name)
            error = f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_MAX]
        await self._release(job, error)
        return True

    async def run_now(self, name: str) -> dict[str, Any]:
        job = self.job(name)
        if not await self._tick(job):
            raise conflict(f"job '{name}' is running")
        return await self.describe(name)

    # --- the admin view --------------------------------------------------------------------

    async def describe_all(self) -> list[dict[str, Any]]:
        await self._ensure_rows()
        async with self._db.read() as session:
            rows = {row.name: row for row in (await session.execute(sa.select(JobLease))).scalars()}
        at = clock.real_now()
        return [job_json(job, rows.get(job.name), at) for job in self._jobs.values()]

    async def describe(self, name: str) -> dict[str, Any]:
        return next(entry for entry in await self.describe_all() if entry["name"] == name)

    # --- the schedule ----------------------------------------------------------------------

    def start(self) -> None:
        for job in self._jobs.values():
            self._tasks.append(asyncio.create_task(self._loop(job), name=f"job-{job.name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _loop(self, job: Job) -> None:
        await self._announce(job, clock.real_now() + job.first_delay)
        await asyncio.sleep(job.first_delay.total_seconds())
        while True:
            try:
                await self._tick(job)
            except Exception:
                # The lease table itself failed (database down); try again next time.
                log.exception("job %s could not run", job.name)
            await asyncio.sleep(job.interval.total_seconds())

    async def _announce(self, job: Job, first_run: datetime) -> None:
        """Record when this process will first tick, unless another plans to tick sooner."""
        await self._ensure_rows()
        async with self._db.write() as session:
            await session.execute(
                sa.update(JobLease)
                .where(
                    JobLease.name == job.name,
                    sa.or_(
                        JobLease.next_run_at.is_(None),
                        JobLease.next_run_at < clock.real_now(),
                        JobLease.next_run_at > first_run,
                    ),
                )
                .values(next_run_at=first_run)
            )


def job_json(job: Job, row: JobLease | None, at: datetime) -> dict[str, Any]:
    running = bool(
        row is not None and row.holder is not None and row.lease_until and row.lease_until > at
    )
    return {
        "name": job.name,
        "interval_seconds": int(job.interval.total_seconds()),
        "last_started_at": format_optional_ts(row.last_started_at if row else None),
        "last_finished_at": format_optional_ts(row.last_finished_at if row else None),
        "last_status": row.last_status if row else None,
        "last_error": row.last_error if row else None,
        "next_run_at": format_optional_ts(row.next_run_at if row else None),
        "running": running,
    }
