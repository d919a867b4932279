"""Wire shapes of the signing-key routes."""

from __future__ import annotations

from pydantic import BaseModel


class PubkeyResponse(BaseModel):
    algorithm: str
    public_key_pem: str


class IssuerPublicKeyResponse(BaseModel):
    public_key_pem: str
    key_algorithm: str
    key_format_version: int


class ImportIssuerKeyResponse(BaseModel):
    ok: bool
    public_key_pem: str
    restart_required: bool
    message: str


class ExportIssuerKeyResponse(BaseModel):
    ok: bool
    key_algorithm: str
    private_key_pem: str
    public_key_pem: str
