"""The business clock. Every rule reads time through `now()`.

Tests freeze or advance it instead of sleeping; the sandbox test clock (billing.md 9.3)
adds an offset to it. Real time stays available through `real_now()`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self._frozen_at: datetime | None = None
        self._offset = timedelta(0)

    def real_now(self) -> datetime:
        return datetime.now(UTC)

    def now(self) -> datetime:
        base = self._frozen_at if self._frozen_at is not None else self.real_now()
        return base + self._offset

    @property
    def offset_seconds(self) -> int:
        return int(self._offset.total_seconds())

    def set_offset(self, seconds: int) -> None:
        self._offset = timedelta(seconds=seconds)

    def freeze(self, at: datetime | None = None) -> None:
        self._frozen_at = (at or self.real_now()).astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        if self._frozen_at is None:
            self._offset += delta
        else:
            self._frozen_at += delta

    def reset(self) -> None:
        self._frozen_at = None
        self._offset = timedelta(0)


clock = Clock()


def now() -> datetime:
    return clock.now()
