"""Routes (being written)."""

from fastapi import APIRouter

public_router = APIRouter()
admin_router = APIRouter()
