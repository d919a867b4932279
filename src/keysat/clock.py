"""The two clocks (billing.md 9.3).

The business clock (`now()`) decides everything about money and licenses; the system
clock (`clock.real_now()`) everything operational. Outside sandbox mode they agree. In
sandbox mode the business clock runs ahead by the sandbox test clock's offset, so an
operator can rehearse months of a subscription's life in minutes. Tests freeze or advance
the business clock instead of sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self._frozen_at: datetime | None = None
        self._test_offset = timedelta(0)
        self._sandbox_offset = timedelta(0)

    def real_now(self) -> datetime:
        return datetime.now(UTC)

    def now(self) -> datetime:
        base = self._frozen_at if self._frozen_at is not None else self.real_now()
        return base + self._test_offset + self._sandbox_offset

    @property
    def sandbox_offset_seconds(self) -> int:
        return int(self._sandbox_offset.total_seconds())

    def set_sandbox_offset(self, seconds: int) -> None:
        self._sandbox_offset = timedelta(seconds=seconds)

    def freeze(self, at: datetime | None = None) -> None:
        self._frozen_at = (at or self.real_now()).astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        if self._frozen_at is None:
            self._test_offset += delta
        else:
            self._frozen_at += delta

    def reset(self) -> None:
        self._frozen_at = None
        self._test_offset = timedelta(0)
        self._sandbox_offset = timedelta(0)


clock = Clock()


def now() -> datetime:
    return clock.now()
