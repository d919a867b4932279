"""Background work of the access domain (billing.md 9.1)."""

from __future__ import annotations

from datetime import datetime, timedelta

from keysat.access.sessions import Sessions
from keysat.jobs import Job


def access_jobs(sessions: Sessions) -> list[Job]:
    async def reap_sessions(_business_now: datetime) -> None:
        # Sessions live on the system clock, which the store reads itself: the sandbox test
        # clock must not end an operator's session early.
        await sessions.reap()

    return [Job("session_reaper", timedelta(0), timedelta(hours=1), reap_sessions)]
