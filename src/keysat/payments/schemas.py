"""Wire shapes of provider connect flows, status and the sandbox calls (admin-api.md 10,
11, 8.5; payments.md 3.3)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field

from keysat.errors import bad_request
from keysat.wire import StrictModel, parse_json_object, validate_model

STRING_MAX = 1024


class BTCPayConnectBody(StrictModel):
    merchant_profile_id: str | None = Field(default=None, max_length=STRING_MAX)
    label: str | None = Field(default=None, max_length=STRING_MAX)


class DisconnectBody(StrictModel):
    provider_id: str | None = Field(default=None, max_length=STRING_MAX)


class ZapriteConnectBody(StrictModel):
    api_key: str = Field(max_length=STRING_MAX)
    base_url: str | None = Field(default=None, max_length=2048)
    label: str | None = Field(default=None, max_length=STRING_MAX)
    merchant_profile_id: str | None = Field(default=None, max_length=STRING_MAX)


class SandboxPayBody(StrictModel):
    amount_sats: int | None = Field(default=None, le=2**63 - 1)


async def parse_zaprite_connect(request: Request) -> ZapriteConnectBody:
    """Parsed after the sandbox and tier gates, which answer before any body check."""
    return validate_model(ZapriteConnectBody, await parse_json_object(request, allow_empty=False))


async def parse_sandbox_pay(request: Request) -> SandboxPayBody:
    body = validate_model(SandboxPayBody, await parse_json_object(request, allow_empty=True))
    if body.amount_sats is not None and body.amount_sats <= 0:
        raise bad_request("amount_sats must be positive")
    return body


class ConnectStarted(BaseModel):
    authorize_url: str
    state: str
    merchant_profile_id: str


class BTCPayDisconnected(BaseModel):
    ok: bool
    noop: bool
    message: str | None = None
    provider_id: str | None = None
    store_id: str | None = None
    webhook_id: str | None = None
    warnings: list[str] | None = None


class BTCPayStatus(BaseModel):
    connected: bool
    provider_id: str | None = None
    store_id: str | None = None
    webhook_id: str | None = None
    base_url: str | None = None
    label: str | None = None
    merchant_profile_id: str | None = None
    merchant_profile_name: str | None = None


class PaymentMethods(BaseModel):
    store_id: str
    count: int
    methods: list[Any]


class ZapriteConnected(BaseModel):
    ok: bool
    provider: str
    provider_id: str
    merchant_profile_id: str
    merchant_profile_name: str
    label: str
    base_url: str
    webhook_url: str


class ZapriteDisconnected(BaseModel):
    ok: bool
    noop: bool
    message: str
    provider_id: str | None = None


class ZapriteStatus(BaseModel):
    connected: bool
    provider_id: str | None
    base_url: str | None
    label: str | None
    webhook_id: str | None
    merchant_profile_id: str
    merchant_profile_name: str
    webhook_url: str
    webhook_explainer: str


class ProviderRef(BaseModel):
    id: str
    kind: str
    label: str
    base_url: str
    store_id: str | None


class ProviderStatus(BaseModel):
    btcpay_configured: bool
    zaprite_configured: bool
    preferred: str | None
    active: str | None
    merchant_profile_id: str
    merchant_profile_name: str
    providers: list[ProviderRef]


class SandboxActionResponse(BaseModel):
    ok: bool
    invoice_id: str
    provider_invoice_id: str
    status: str
