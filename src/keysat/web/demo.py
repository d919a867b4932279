"""The demo shop of `make run` (`keysat serve --demo`): in sandbox mode, an empty catalog
gets one product with three tiers and a launch special, so the printed buy URL has
something to sell and a new user can pay in the sandbox at once."""

from __future__ import annotations

import sqlalchemy as sa

from keysat.access.actor import SYSTEM
from keysat.billing.discounts import create_code
from keysat.billing.schemas import DiscountCodeCreate
from keysat.catalog.models import Product
from keysat.catalog.schemas import CatalogEntryIn, PolicyCreate, ProductCreate
from keysat.catalog.service import create_policy, create_product
from keysat.state import AppState

DEMO_SLUG = "demo-app"
DEMO_PRODUCT = ProductCreate(
    slug=DEMO_SLUG,
    name="Demo App",
    description="An example product of this sandbox server. Buy a tier to see the whole "
    "flow: checkout, receipt and a license key your app can validate.",
    price_sats=50_000,
    entitlements_catalog=[
        CatalogEntryIn(slug="sync", name="Cloud sync", description="Settings on every device"),
        CatalogEntryIn(slug="themes", name="Premium themes", description=""),
    ],
)
DEMO_TIERS = (
    PolicyCreate(
        product_slug=DEMO_SLUG,
        slug="starter",
        name="Starter",
        price_sats_override=0,
        metadata={"marketing_bullets": ["The full editor", "Community support"]},
    ),
    PolicyCreate(
        product_slug=DEMO_SLUG,
        slug="pro",
        name="Pro",
        max_machines=3,
        entitlements=["sync", "themes"],
        metadata={
            "highlight": True,
            "description": "For people who use it every day.",
            "marketing_bullets": ["Everything in Starter", "Priority e-mail support"],
        },
    ),
    PolicyCreate(
        product_slug=DEMO_SLUG,
        slug="team",
        name="Team",
        price_sats_override=20_000,
        max_machines=0,
        entitlements=["sync", "themes"],
        is_recurring=True,
        renewal_period_days=30,
        trial_days=14,
    ),
)
DEMO_CODE = DiscountCodeCreate(
    code="LAUNCH20",
    kind="percent",
    amount=2000,
    max_uses=100,
    product_slug=DEMO_SLUG,
    policy_slugs=["pro"],
    description="Launch special of the demo shop",
    featured=True,
)


async def seed_demo_shop(state: AppState) -> bool:
    """Adds the demo product when sandbox mode is on and the catalog is empty."""
    if not state.settings.sandbox_mode:
        return False
    tier = state.tier()
    async with state.db.write() as session:
        if (await session.execute(sa.select(sa.func.count()).select_from(Product))).scalar_one():
            return False
        product = await create_product(session, tier, SYSTEM, DEMO_PRODUCT)
        for body in DEMO_TIERS:
            await create_policy(session, tier, SYSTEM, product, body)
        await session.flush()
        await create_code(session, tier, SYSTEM, DEMO_CODE)
    return True


async def shop_slugs(state: AppState) -> list[str]:
    """The products on sale, for the start-up banner's buy links."""
    async with state.db.read() as session:
        query = sa.select(Product.slug).where(Product.active.is_(True)).order_by(Product.name)
        return list((await session.execute(query)).scalars())
