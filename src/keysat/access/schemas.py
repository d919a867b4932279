"""Wire shapes of API keys, the web password and login (admin-api.md 14, 15.3, 21.6;
access.md 6)."""

from __future__ import annotations

from pydantic import BaseModel, Field

# --- requests -----------------------------------------------------------------------------


class ApiKeyCreate(BaseModel):
    label: str
    role: str = Field(
        description="read-only, license-issuer, support, merchant-onboard or full-admin"
    )
    scopes: list[str] | None = Field(
        default=None, description="extra scopes beyond the role; only payment_providers:write"
    )


class WebPasswordBody(BaseModel):
    password: str


class LoginBody(BaseModel):
    """Exactly one of the two fields."""

    password: str | None = None
    api_key: str | None = Field(default=None, description="the master admin key")


# --- responses ----------------------------------------------------------------------------


class ApiKeyOut(BaseModel):
    id: str
    label: str
    role: str
    scopes: list[str]
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class ApiKeyCreated(BaseModel):
    id: str
    label: str
    role: str
    scopes: list[str]
    created_at: str
    token: str = Field(description="the key itself, shown in this response only")


class ApiKeyList(BaseModel):
    api_keys: list[ApiKeyOut]


class ApiKeyRevoked(BaseModel):
    ok: bool
    revoked_at: str | None = Field(default=None, description="absent when already revoked")
    already_revoked: bool | None = Field(default=None, description="present when already revoked")


class LoginStatus(BaseModel):
    has_password: bool
    logged_in: bool
    csrf_token: str | None = Field(default=None, description="present only when logged in")
