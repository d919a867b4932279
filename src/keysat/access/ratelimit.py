"""Token buckets kept in the database, so every server process shares them (config.md 3.3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.models import RateBucket
from keysat.clock import now
from keysat.db import Database
from keysat.settings import RateLimit, Settings


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0


ALLOWED = Decision(allowed=True)


def refill(tokens: float, capacity: int, per_second: float, elapsed_seconds: float) -> float:
    return min(float(capacity), tokens + max(elapsed_seconds, 0.0) * per_second)


def spend(tokens: float, per_second: float) -> tuple[float, Decision]:
    """Spend one token if there is one; otherwise say how long until there is."""
    if tokens >= 1.0:
        return tokens - 1.0, ALLOWED
    return tokens, Decision(allowed=False, retry_after=math.ceil((1.0 - tokens) / per_second))


class RateLimiter:
    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings

    def limit(self, kind: str) -> RateLimit | None:
        return self._settings.rate_limit(kind)

    async def take(self, kind: str, key: str, *, bucket_kind: str | None = None) -> Decision:
        """Spend a token of limit `kind`; `bucket_kind` names the stored bucket when the spec
        gives it another name than the limit's setting (`web_login` for `login`)."""
        if self.limit(kind) is None:
            return ALLOWED
        async with self._db.write() as session:
            return await self.take_in(session, kind, key, bucket_kind=bucket_kind)

    async def take_in(
        self, session: AsyncSession, kind: str, key: str, *, bucket_kind: str | None = None
    ) -> Decision:
        """Spend a token inside the caller's write transaction."""
        limit = self.limit(kind)
        if limit is None:
            return ALLOWED
        stored_kind = bucket_kind or kind
        at = now()
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        await session.execute(
            insert(RateBucket)
            .values(
                bucket_kind=stored_kind,
                bucket_key=key,
                tokens_remaining=float(limit.capacity),
                capacity=limit.capacity,
                refill_per_second=limit.refill_per_second,
                last_refill_at=at,
            )
            .on_conflict_do_nothing()
        )
        bucket = (
            await session.execute(
                sa.select(RateBucket)
                .where(RateBucket.bucket_kind == stored_kind, RateBucket.bucket_key == key)
                .with_for_update()
            )
        ).scalar_one()
        elapsed = (at - bucket.last_refill_at).total_seconds()
        tokens = refill(bucket.tokens_remaining, limit.capacity, limit.refill_per_second, elapsed)
        tokens, decision = spend(tokens, limit.refill_per_second)
        bucket.tokens_remaining = tokens
        bucket.capacity = limit.capacity
        bucket.refill_per_second = limit.refill_per_second
        bucket.last_refill_at = max(at, bucket.last_refill_at)
        await session.flush()
        return decision
