"""Who acted: the identity written into audit rows (access.md 7)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    kind: str
    hash: str | None = None
    id: str | None = None
    request_ip: str | None = None
    user_agent: str | None = None


SYSTEM = Actor(kind="system")
