"""Gate dependencies for admin routes: authenticate and authorize before anything else."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from keysat.access.actor import Actor
from keysat.access.service import authenticate, authorize
from keysat.errors import forbidden
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


def require_provider_connect() -> Any:
    """access.md 5.3: the master key (or a web session) always; a scoped key only with
    `payment_providers:write` and only in sandbox mode."""

    async def dependency(request: Request) -> Actor:
        state = app_state(request)
        credential = authenticate(request, state.settings, state.master_key)
        if credential.is_master:
            return credential.actor
        if state.settings.sandbox_mode:
            return authorize(credential, "payment_providers:write")
        raise forbidden()

    return Depends(dependency)
