"""Constants and small helpers shared by the test modules."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import httpx
import sqlalchemy as sa

from keysat.billing.models import Invoice
from keysat.clock import now
from keysat.keys import KeyFields, encode_key, generate_private_key, parse_key
from keysat.licensing.models import License, Machine
from keysat.operator.models import AuditEntry
from keysat.webhooks.models import WebhookEvent
from keysat.wire import new_id

ADMIN_KEY = "test-admin-key-0123456789abcdefghijklmnop"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# A well-formed id no row has. Fixed, so that every test worker collects the same tests.
UNKNOWN_ID = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
# Stands in for Keysat's trust root: in-process servers verify self-licenses against it.
TRUST_KEY = generate_private_key()


def self_license_key(*entitlements: str, expires_at: int = 0) -> str:
    """A self-license signed by the test trust root; pass it as KEYSAT_LICENSE."""
    fields = KeyFields(
        version=2,
        flags=0,
        product_id=uuid.uuid4(),
        license_id=uuid.uuid4(),
        issued_at=1_767_225_600,
        expires_at=expires_at,
        fingerprint_hash=bytes(32),
        entitlements=tuple(entitlements),
    )
    return encode_key(fields, TRUST_KEY)


async def create_product(server: Any, slug: str = "acme", **fields: Any) -> dict[str, Any]:
    body = {"slug": slug, "name": fields.pop("name", slug.title()), "price_sats": 1000, **fields}
    response = await server.admin_post("/v1/admin/products", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def create_policy(
    server: Any, product_slug: str = "acme", slug: str = "pro", **fields: Any
) -> dict[str, Any]:
    body = {"product_slug": product_slug, "slug": slug, "name": fields.pop("name", slug), **fields}
    response = await server.admin_post("/v1/admin/policies", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def issue_license(server: Any, product_slug: str = "acme", **fields: Any) -> dict[str, Any]:
    response = await server.admin_post(
        "/v1/admin/licenses", {"product_slug": product_slug, **fields}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def event_rows(server: Any, event_type: str) -> list[WebhookEvent]:
    async with server.state.db.read() as session:
        query = (
            sa.select(WebhookEvent)
            .where(WebhookEvent.event_type == event_type)
            .order_by(WebhookEvent.created_at)
        )
        return list((await session.execute(query)).scalars())


async def events(server: Any, event_type: str) -> list[dict[str, Any]]:
    """The outbox envelopes recorded for one event type, oldest first."""
    return [json.loads(row.payload_json) for row in await event_rows(server, event_type)]


async def machines_of(server: Any, license_id: str) -> list[Machine]:
    async with server.state.db.read() as session:
        query = (
            sa.select(Machine)
            .where(Machine.license_id == license_id)
            .order_by(Machine.activated_at, Machine.id)
        )
        return list((await session.execute(query)).scalars())


async def signing_key(server: Any) -> Any:
    async with server.state.db.read() as session:
        return (await server.state.issuer_keys.current(session)).private_key


def fields_of(key: str, **changes: Any) -> KeyFields:
    """The fields of an existing key, with some replaced: for re-signing odd variants."""
    parsed = parse_key(key)
    values: dict[str, Any] = {
        "version": 2,
        "flags": parsed.flags,
        "product_id": parsed.product_id,
        "license_id": parsed.license_id,
        "issued_at": parsed.issued_at,
        "expires_at": parsed.expires_at,
        "fingerprint_hash": parsed.fingerprint_hash,
        "entitlements": parsed.entitlements,
    }
    values.update(changes)
    return KeyFields(**values)


async def audit_rows(server: Any, action: str) -> list[AuditEntry]:
    async with server.state.db.read() as session:
        query = sa.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        return list((await session.execute(query)).scalars())


def assert_error(response: Any, status: int, error: str, message: str | None = None) -> None:
    """The error envelope, exactly: no field beyond ok, error and message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"ok", "error", "message"}
    assert body["ok"] is False
    assert body["error"] == error
    if message is not None:
        assert body["message"] == message


async def add_license(
    server: Any, product_id: str, policy_id: str | None = None, status: str = "active"
) -> str:
    """A license row written straight to the database, bypassing the issue route."""
    at = now()
    license_id = new_id()
    async with server.state.db.write() as session:
        session.add(
            License(
                id=license_id,
                product_id=product_id,
                policy_id=policy_id,
                status=status,
                issued_at=at,
                updated_at=at,
                revoked_at=at if status == "revoked" else None,
            )
        )
    return license_id


async def add_invoice(
    server: Any, product_id: str, policy_id: str | None = None, status: str = "pending"
) -> str:
    """A purchase invoice row written straight to the database."""
    at = now()
    invoice_id = new_id()
    async with server.state.db.write() as session:
        session.add(
            Invoice(
                id=invoice_id,
                kind="purchase",
                status=status,
                product_id=product_id,
                policy_id=policy_id,
                amount_sats=1000,
                base_price_sats=1000,
                provider_kind="sandbox",
                provider_invoice_id=f"sbx_{invoice_id}",
                created_at=at,
                updated_at=at,
                settled_at=at if status == "settled" else None,
            )
        )
    return invoice_id


async def purchase(server: Any, product: str = "acme", **fields: Any) -> dict[str, Any]:
    """POST /v1/purchase, asserting the documented 200."""
    response = await server.client.post("/v1/purchase", json={"product": product, **fields})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def sandbox_action(
    server: Any, invoice_id: str, action: str = "pay", **body: Any
) -> dict[str, Any]:
    """Pay, expire or invalidate a sandbox invoice through the admin call."""
    response = await server.admin_post(f"/v1/admin/sandbox/invoices/{invoice_id}/{action}", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def poll(server: Any, invoice_id: str) -> dict[str, Any]:
    response = await server.client.get(f"/v1/purchase/{invoice_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def invoice_row(server: Any, invoice_id: str) -> Invoice:
    async with server.state.db.read() as session:
        row = await session.get(Invoice, invoice_id)
    assert row is not None
    return row


async def licenses_for_invoice(server: Any, invoice_id: str) -> list[License]:
    async with server.state.db.read() as session:
        query = sa.select(License).where(License.invoice_id == invoice_id)
        return list((await session.execute(query)).scalars())


async def connect_btcpay_row(
    server: Any, fake: Any, *, network: str = "regtest", profile_id: str | None = None
) -> str:
    """A BTCPay provider row for `fake`'s default store, written straight to the database,
    with a webhook registered at the fake so it can deliver signed events."""
    from keysat.operator.service import default_profile
    from keysat.payments.models import PaymentProvider

    provider_id = new_id()
    secret = "test-webhook-secret-" + provider_id[:8]
    url = f"{server.state.settings.public_url}/v1/btcpay/webhook/{provider_id}"
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{fake.url}/api/v1/stores/{fake.store_id}/webhooks",
            headers={"Authorization": f"token {fake.api_key}"},
            json={
                "url": url,
                "enabled": True,
                "automaticRedelivery": True,
                "secret": secret,
                "authorizedEvents": {
                    "everything": False,
                    "specificEvents": ["InvoiceSettled", "InvoiceExpired", "InvoiceInvalid"],
                },
            },
        )
    assert response.status_code == 200, response.text
    at = now()
    async with server.state.db.write() as session:
        profile = profile_id or (await default_profile(session)).id
        session.add(
            PaymentProvider(
                id=provider_id,
                merchant_profile_id=profile,
                kind="btcpay",
                label="BTCPay test store",
                api_key=fake.api_key,
                base_url=fake.url,
                store_id=fake.store_id,
                webhook_id=response.json()["id"],
                webhook_secret=secret,
                network=network,
                connected_at=at,
                updated_at=at,
            )
        )
    return provider_id


async def connect_zaprite_row(server: Any, fake: Any, *, profile_id: str | None = None) -> str:
    """A Zaprite provider row for `fake`, written straight to the database."""
    from keysat.operator.service import default_profile
    from keysat.payments.models import PaymentProvider

    provider_id = new_id()
    at = now()
    async with server.state.db.write() as session:
        profile = profile_id or (await default_profile(session)).id
        session.add(
            PaymentProvider(
                id=provider_id,
                merchant_profile_id=profile,
                kind="zaprite",
                label="Zaprite test org",
                api_key=fake.api_key,
                base_url=fake.url,
                connected_at=at,
                updated_at=at,
            )
        )
    return provider_id
