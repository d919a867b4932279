"""Every cap and feature gate of access.md 9.2, on three servers: Creator (no self-license)
answers `402 tier_cap` with the upgrade URL and changes nothing; a Pro self-license and
sandbox mode let the same request through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from fakes.zaprite import FakeZaprite
from keysat.billing.models import DiscountCode
from keysat.catalog.models import Policy, Product
from keysat.operator.models import AuditEntry, MerchantProfile
from keysat.payments.models import PaymentProvider
from support import create_policy, create_product, self_license_key

PRO = (
    "self_host",
    "unlimited_products",
    "unlimited_policies",
    "unlimited_codes",
    "recurring_billing",
    "zaprite_payments",
    "unlimited_merchant_profiles",
)
UPGRADE_URL = "https://licensing.keysat.xyz/buy/keysat?policy=pro"
CODES = "/v1/admin/discount-codes"
RECURRING = {"is_recurring": True, "renewal_period_days": 30, "grace_period_days": 7}


@dataclass(frozen=True)
class Gate:
    """A cap or gate: `fill` brings a server to it, `attempt` is the request it guards,
    and `state` reads what a refused attempt must leave unchanged."""

    name: str
    fill: Callable[[Any, FakeZaprite], Awaitable[None]]
    attempt: Callable[[Any, FakeZaprite], Awaitable[httpx.Response]]
    state: Callable[[Any], Awaitable[Any]]
    # The answer outside a Creator refusal; Zaprite is refused in sandbox mode (access.md 8).
    sandbox_status: int = 200


async def count(server: Any, query: sa.Select[Any]) -> int:
    async with server.state.db.read() as session:
        return int((await session.execute(query)).scalar_one())


async def code(server: Any, name: str, active: bool = True) -> str:
    response = await server.admin_post(CODES, {"code": name, "kind": "percent", "amount": 500})
    assert response.status_code == 200, response.text
    code_id = str(response.json()["id"])
    if not active:
        await server.admin_patch(f"{CODES}/{code_id}/active", {"active": False})
    return code_id


async def products_full(server: Any, _fake: FakeZaprite) -> None:
    for index in range(5):
        await create_product(server, f"p{index}")


async def policies_full(server: Any, _fake: FakeZaprite) -> None:
    await create_product(server, "acme")
    for index in range(5):
        await create_policy(server, "acme", f"t{index}")


async def codes_full(server: Any, _fake: FakeZaprite) -> None:
    await code(server, "DORMANT", active=False)
    for index in range(10):
        await code(server, f"CODE{index}")


async def nothing(server: Any, _fake: FakeZaprite) -> None:
    return None


async def one_policy(server: Any, _fake: FakeZaprite) -> None:
    await create_product(server, "acme")
    await create_policy(server, "acme", "plain")


async def dormant_id(server: Any) -> str:
    async with server.state.db.read() as session:
        query = sa.select(DiscountCode.id).where(DiscountCode.code == "DORMANT")
        return str((await session.execute(query)).scalar_one())


async def plain_id(server: Any) -> str:
    async with server.state.db.read() as session:
        query = sa.select(Policy.id).where(Policy.slug == "plain")
        return str((await session.execute(query)).scalar_one())


async def recurring_count(server: Any) -> int:
    return await count(
        server, sa.select(sa.func.count()).select_from(Policy).where(Policy.is_recurring)
    )


GATES = [
    Gate(
        "product cap",
        products_full,
        lambda s, _f: s.admin_post(
            "/v1/admin/products", {"slug": "p5", "name": "P5", "price_sats": 1}
        ),
        lambda s: count(s, sa.select(sa.func.count()).select_from(Product)),
    ),
    Gate(
        "policy cap",
        policies_full,
        lambda s, _f: s.admin_post(
            "/v1/admin/policies", {"product_slug": "acme", "slug": "t5", "name": "T5"}
        ),
        lambda s: count(s, sa.select(sa.func.count()).select_from(Policy)),
    ),
    Gate(
        "discount-code cap on create",
        codes_full,
        lambda s, _f: s.admin_post(CODES, {"code": "ELEVEN", "kind": "percent", "amount": 500}),
        lambda s: count(s, sa.select(sa.func.count()).select_from(DiscountCode)),
    ),
    Gate(
        "discount-code cap on re-enable",
        codes_full,
        lambda s, _f: _enable_dormant(s),
        lambda s: count(s, sa.select(sa.func.count()).where(DiscountCode.active.is_(True))),
    ),
    Gate(
        "merchant-profile cap",
        nothing,
        lambda s, _f: s.admin_post("/v1/admin/merchant-profiles", {"name": "Second"}),
        lambda s: count(s, sa.select(sa.func.count()).select_from(MerchantProfile)),
    ),
    Gate(
        "recurring billing on create",
        one_policy,
        lambda s, _f: s.admin_post(
            "/v1/admin/policies",
            {"product_slug": "acme", "slug": "monthly", "name": "Monthly", **RECURRING},
        ),
        lambda s: count(s, sa.select(sa.func.count()).select_from(Policy)),
    ),
    Gate(
        "recurring billing on patch",
        one_policy,
        lambda s, _f: _make_recurring(s),
        recurring_count,
    ),
    Gate(
        "zaprite payments",
        nothing,
        lambda s, f: s.admin_post(
            "/v1/admin/zaprite/connect", {"api_key": f.api_key, "base_url": f.url}
        ),
        lambda s: count(s, sa.select(sa.func.count()).select_from(PaymentProvider)),
        sandbox_status=409,
    ),
]


async def _enable_dormant(server: Any) -> httpx.Response:
    response: httpx.Response = await server.admin_patch(
        f"{CODES}/{await dormant_id(server)}/active", {"active": True}
    )
    return response


async def _make_recurring(server: Any) -> httpx.Response:
    response: httpx.Response = await server.admin_patch(
        f"/v1/admin/policies/{await plain_id(server)}", RECURRING
    )
    return response


async def audit_count(server: Any) -> int:
    return await count(server, sa.select(sa.func.count()).select_from(AuditEntry))


@pytest.mark.parametrize("gate", GATES, ids=[gate.name for gate in GATES])
async def test_creator_is_refused_with_402_and_nothing_changes(
    server: Any, fake_zaprite: FakeZaprite, gate: Gate
) -> None:
    await gate.fill(server, fake_zaprite)
    before, audits = await gate.state(server), await audit_count(server)
    response = await gate.attempt(server, fake_zaprite)
    assert response.status_code == 402, response.text
    body = response.json()
    assert set(body) == {"ok", "error", "message", "upgrade_url"}
    assert (body["ok"], body["error"], body["upgrade_url"]) == (False, "tier_cap", UPGRADE_URL)
    assert "Creator" in body["message"] and not body["message"].startswith("bad request")
    assert await gate.state(server) == before
    assert await audit_count(server) == audits
    assert fake_zaprite.requests == []


@pytest.mark.parametrize("gate", GATES, ids=[gate.name for gate in GATES])
async def test_a_pro_self_license_lifts_every_gate(
    make_server: Callable[..., Any], fake_zaprite: FakeZaprite, gate: Gate
) -> None:
    server = await make_server(KEYSAT_LICENSE=self_license_key(*PRO))
    await gate.fill(server, fake_zaprite)
    before, audits = await gate.state(server), await audit_count(server)
    response = await gate.attempt(server, fake_zaprite)
    assert response.status_code == 200, response.text
    assert await gate.state(server) == before + 1
    assert await audit_count(server) == audits + 1


@pytest.mark.parametrize("gate", GATES, ids=[gate.name for gate in GATES])
async def test_sandbox_mode_never_answers_402(
    make_server: Callable[..., Any], fake_zaprite: FakeZaprite, gate: Gate
) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true")
    await gate.fill(server, fake_zaprite)
    before = await gate.state(server)
    response = await gate.attempt(server, fake_zaprite)
    assert response.status_code == gate.sandbox_status, response.text
    expected = before + 1 if gate.sandbox_status == 200 else before
    assert await gate.state(server) == expected
