"""Placeholder until this screen lands (web.md 11.5)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
