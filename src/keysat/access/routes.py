"""Gate dependencies for admin routes: authenticate and authorize before anything else."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from keysat.access.actor import Actor
from keysat.access.service import authenticate, authorize
from keysat.state import app_state


def _gate(scope: str | None) -> Any:
    async def dependency(request: Request) -> Actor:
        state = app_state(request)
        return authorize(authenticate(request, state.settings, state.master_key), scope)

    return Depends(dependency)


def require_scope(scope: str) -> Any:
    return _gate(scope)


def require_master() -> Any:
    return _gate(None)
