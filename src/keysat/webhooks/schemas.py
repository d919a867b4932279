"""Wire shapes of webhook endpoints and deliveries (admin-api.md 13, 21.6)."""

from __future__ import annotations

from pydantic import BaseModel, Field

DESCRIPTION_MAX = 1000


# --- requests -----------------------------------------------------------------------------


class EndpointCreate(BaseModel):
    url: str
    event_types: list[str] | None = None
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX)
    secret: str | None = None


class ActiveBody(BaseModel):
    active: bool


# --- responses ----------------------------------------------------------------------------


class EndpointOut(BaseModel):
    id: str
    url: str
    secret: str | None = Field(
        default=None, description="present only on create and with include_secret=true"
    )
    event_types: list[str]
    active: bool
    description: str
    created_at: str
    updated_at: str


class EndpointList(BaseModel):
    endpoints: list[EndpointOut]


class EndpointDeleted(BaseModel):
    ok: bool
    cascaded_deliveries: int


class DeliveryOut(BaseModel):
    id: str
    endpoint_id: str
    event_type: str
    payload_json: str
    attempt_count: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: str | None
    created_at: str


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
