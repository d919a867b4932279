"""The buyer pages' rules: what the home, buy, thank-you and recover pages show, read from
the catalog, the merchant profile, the invoice and its license (web.md 4-8). Routes turn
these contexts into pages; nothing here knows about HTTP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.billing.models import DiscountCode, DiscountRedemption, Invoice
from keysat.billing.purchase import invoice_license, would_be_trial
from keysat.catalog.models import Policy, Product
from keysat.catalog.service import (
    effective_price,
    get_product_by_slug,
    is_purchasable,
    public_tier_order,
    public_tiers_json,
    wire_currency,
)
from keysat.clock import now
from keysat.licensing.models import License
from keysat.licensing.service import license_key
from keysat.operator.models import MerchantProfile
from keysat.operator.service import default_profile, effective_operator_name, profile_for
from keysat.payments.models import PaymentProvider
from keysat.payments.provider import TEST_NETWORKS
from keysat.payments.service import providers_of, rail_preferences
from keysat.state import AppState
from keysat.web.format import (
    brand_colour,
    buyer_message,
    checkout_allowed,
    format_date,
    format_money,
    format_price,
    mailto_address,
    renews_line,
    safe_link,
    shorten,
)
from keysat.web.pages import Brand
from keysat.web.views import (
    FREE_LABEL,
    RAIL_LABELS,
    TRIAL_NO_CODES,
    PaymentSetup,
    PriceView,
    TierCard,
    initial_tier,
    payment_setup,
    preview_view,
    product_price_view,
    tier_card,
)
from keysat.wire import normalize_id

# The name the first migration gives the default merchant profile: a placeholder, not a
# seller anyone would recognise, so "Sold by" skips it.
PLACEHOLDER_PROFILE_NAME = "Default"
PROVIDER_HELP = {
    "btcpay": "Lightning payments confirm within seconds. On-chain payments are confirmed once "
    "they are in a block, which can take ten minutes or more.",
    "zaprite": "Card and Lightning payments confirm within seconds. On-chain payments wait "
    "for a block.",
    "sandbox": "This is a simulated payment: use the sandbox checkout's \u201cSimulate "
    "payment\u201d button.",
}
INVALID_EMAIL = "That e-mail address doesn't look right. Check it, or leave the field empty."


@dataclass(frozen=True)
class Chrome:
    """The shared top bar and footer of the public pages (web.md 4)."""

    seller: str
    support_url: str | None
    support_email: str | None
    legal_name: str | None

    @property
    def contact_link(self) -> str | None:
        if self.support_url:
            return self.support_url
        return f"mailto:{self.support_email}" if self.support_email else None


@dataclass(frozen=True)
class FormError:
    message: str
    field: str | None = None  # "code" or "email": where the message is shown


@dataclass
class BuyForm:
    """The buy form's fields as posted (web.md 6.9), kept to re-render them."""

    policy_slug: str | None = None
    buyer_email: str = ""
    buyer_note: str = ""
    code: str = ""
    rail: str | None = None
    action: str = "buy"

    @classmethod
    def from_fields(cls, fields: Mapping[str, Sequence[str]]) -> BuyForm:
        def first(name: str) -> str:
            values = fields.get(name) or [""]
            return values[0]

        return cls(
            policy_slug=first("policy_slug").strip() or None,
            buyer_email=first("buyer_email"),
            buyer_note=first("buyer_note"),
            code=first("code"),
            rail=first("rail").strip() or None,
            action="apply" if first("action") == "apply" else "buy",
        )


@dataclass
class Status:
    message: str
    ok: bool


@dataclass
class BuyPage:
    chrome: Chrome
    brand: Brand
    product: Product
    currency: str
    tiers: list[TierCard]
    selected: int
    single_price: PriceView | None
    single_kind: str
    setup: PaymentSetup
    receipts: bool
    form: BuyForm
    status: Status | None = None
    error: FormError | None = None
    preview_price: PriceView | None = None
    preview_free: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    def context(self) -> dict[str, Any]:
        return {"page": self, "chrome": self.chrome, "rail_labels": RAIL_LABELS}


# --- chrome -----------------------------------------------------------------------------------


async def chrome_for(
    session: AsyncSession, operator_name: str | None, product: Product | None
) -> tuple[Chrome, Brand]:
    """The seller and support links for a product's pages, or the operator's for pages
    tied to no product; the brand colour only applies to the former."""
    profile = await profile_for(session, product.merchant_profile_id if product else None)
    if profile is None:
        profile = await default_profile(session)
    if product is not None and not profile.is_default:
        seller = profile.name
    else:
        seller = await operator_display_name(session, operator_name)
    chrome = Chrome(
        seller=seller,
        support_url=safe_link(profile.support_url),
        support_email=mailto_address(profile.support_email),
        legal_name=profile.legal_name or None,
    )
    colour = brand_colour(profile.brand_color if product is not None else None)
    return chrome, Brand(colour)


async def operator_display_name(session: AsyncSession, operator_name: str | None) -> str:
    """The stored setting, KEYSAT_OPERATOR_NAME, the default profile's name, else Keysat."""
    name = await effective_operator_name(session, operator_name)
    if name:
        return name
    profile = await default_profile(session)
    if profile.name and profile.name != PLACEHOLDER_PROFILE_NAME:
        return profile.name
    return "Keysat"


# --- home -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductSummary:
    slug: str
    name: str
    description: str
    from_price: str


async def home_context(state: AppState) -> dict[str, Any]:
    async with state.db.read() as session:
        chrome, _ = await chrome_for(session, state.settings.operator_name, None)
        products = (
            (await session.execute(sa.select(Product).where(Product.active.is_(True))))
            .scalars()
            .all()
        )
        policies = (await session.execute(sa.select(Policy))).scalars().all()
    by_product: dict[str, list[Policy]] = {}
    for policy in policies:
        if is_purchasable(policy):
            by_product.setdefault(policy.product_id, []).append(policy)
    summaries = []
    for product in sorted(products, key=lambda item: (item.name.lower(), item.slug)):
        tiers = by_product.get(product.id)
        if not tiers:
            continue
        cheapest = public_tier_order(product, tiers)[0]
        price = effective_price(product, cheapest)
        period = cheapest.renewal_period_days if cheapest.is_recurring else 0
        text = format_price(price, wire_currency(product), period)
        summaries.append(
            ProductSummary(
                slug=product.slug,
                name=product.name,
                description=shorten(product.description or ""),
                from_price=text if price == 0 else f"From {text}",
            )
        )
    return {"chrome": chrome, "products": summaries}


# --- buy page ---------------------------------------------------------------------------------


async def _eligible_providers(
    session: AsyncSession, profile: MerchantProfile, sandbox: bool
) -> list[tuple[str, str]]:
    """The profile's providers that take money now, without probing anything: in sandbox
    mode only BTCPay stores whose recorded network is a test network (payments.md 2.5)."""
    rows: list[PaymentProvider] = await providers_of(session, profile.id)
    return [
        (row.id, row.kind)
        for row in rows
        if not sandbox or (row.kind == "btcpay" and row.network in TEST_NETWORKS)
    ]


async def _cached_centibps(state: AppState, session: AsyncSession, currency: str) -> int | None:
    """A rate already at hand (a pin, or the cache); rendering never fetches one."""
    if currency in ("SAT", "BTC"):
        return None
    for rate in [*await state.rates.pins(session), *state.rates.cached()]:
        if rate.currency == currency:
            return rate.centibps
    return None


def receipts_configured(profile: MerchantProfile) -> bool:
    return bool(profile.smtp_host and profile.smtp_from_address)


async def buy_page(
    state: AppState,
    slug: str,
    form: BuyForm,
    *,
    requested_policy: str | None = None,
    preview: Mapping[str, Any] | None = None,
    error: FormError | None = None,
) -> BuyPage | None:
    """The buy page of an active product, or None when there is none to sell."""
    async with state.db.read() as session:
        product = await get_product_by_slug(session, slug)
        if product is None or not product.active:
            return None
        policies = (
            (await session.execute(sa.select(Policy).where(Policy.product_id == product.id)))
            .scalars()
            .all()
        )
        shown = public_tier_order(product, [p for p in policies if is_purchasable(p)])
        chrome, brand = await chrome_for(session, state.settings.operator_name, product)
        profile = await profile_for(session, product.merchant_profile_id)
        assert profile is not None
        eligible = await _eligible_providers(session, profile, state.settings.sandbox_mode)
        preferences = await rail_preferences(session, profile.id)
        centibps = await _cached_centibps(state, session, wire_currency(product))
    featured = {
        policy.id: await state.purchases.featured_discount(product, policy) for policy in shown
    }
    listing = public_tiers_json(product, shown, featured)
    catalog = {entry["slug"]: entry for entry in listing["product"]["entitlements_catalog"]}
    currency = listing["product"]["price_currency"]
    pill_given = False
    cards = []
    for index, (policy, tier) in enumerate(zip(shown, listing["policies"], strict=True)):
        highlighted = tier["highlighted"] and not pill_given
        pill_given = pill_given or highlighted
        cards.append(
            tier_card(
                index,
                tier,
                catalog,
                highlighted=highlighted,
                trial_once=would_be_trial(policy) and not policy.allow_repeat_trials,
                centibps=centibps,
            )
        )
    setup = payment_setup(eligible, preferences, sandbox=state.settings.sandbox_mode)
    selected = initial_tier(cards, form.policy_slug or requested_policy)
    page = BuyPage(
        chrome=chrome,
        brand=brand,
        product=product,
        currency=currency,
        tiers=cards,
        selected=selected,
        single_price=None,
        single_kind="paid",
        setup=setup,
        receipts=receipts_configured(profile),
        form=form,
        error=error,
    )
    if not cards:
        price = effective_price(product, None)
        page.single_price = product_price_view(product.name, price, currency, centibps)
        page.single_kind = "free" if price == 0 else "paid"
    if form.rail not in setup.picker_rails:
        form.rail = setup.default_rail if setup.picker_rails else None
    if preview is not None:
        _apply_preview(page, preview)
    elif error is not None and error.field == "code":
        page.status = Status(error.message, ok=False)
    page.data = {
        "product": product.slug,
        "currency": currency,
        "tiers": [card.data for card in cards],
        "single": None
        if cards
        else {"price": effective_price(product, None), "period": 0, "kind": page.single_kind},
        "productName": product.name,
        "labels": {
            "paid": setup.paid_label,
            "card": setup.card_label,
            "free": FREE_LABEL,
            "trial": [card.cta for card in cards],
        },
        "ready": setup.ready,
        "receipts": page.receipts,
    }
    return page


def _apply_preview(page: BuyPage, preview: Mapping[str, Any]) -> None:
    """A previewed code (no-JS Apply) shown on the selected tier's price block."""
    if page.tiers and page.tiers[page.selected].kind == "trial":
        page.status = Status(TRIAL_NO_CODES, ok=False)
        return
    if not preview["valid"]:
        page.status = Status(preview["message"], ok=False)
        page.error = FormError(preview["message"], "code")
        return
    page.status = Status(preview["message"], ok=True)
    if page.tiers:
        card = page.tiers[page.selected]
        tier = card.data
        page.preview_price = preview_view(
            card.price_view, tier["price"], page.currency, tier["period"], preview
        )
    else:
        assert page.single_price is not None
        page.preview_price = preview_view(
            page.single_price, effective_price(page.product, None), page.currency, 0, preview
        )
    page.preview_free = page.preview_price.is_free


def purchase_error(message: str) -> FormError:
    """Where the buy page shows a refused purchase: at the code field for code trouble, at
    the e-mail field for a malformed address, else above the button."""
    if "buyer_email" in message:
        return FormError(INVALID_EMAIL, "email")
    text = buyer_message(message)
    return FormError(text, "code" if "code" in message else None)


# --- the interim page of a paid no-JS purchase ------------------------------------------------


async def continue_context(state: AppState, invoice_id: str) -> dict[str, Any]:
    async with state.db.read() as session:
        invoice = await session.get(Invoice, invoice_id)
        assert invoice is not None
        product = await session.get(Product, invoice.product_id)
        policy = await session.get(Policy, invoice.policy_id) if invoice.policy_id else None
        chrome, brand = await chrome_for(session, state.settings.operator_name, product)
    return {
        "chrome": chrome,
        "brand": brand,
        "checkout_ok": checkout_allowed(invoice.checkout_url, state.settings.public_url),
        "product_name": product.name if product else "",
        "tier_name": policy.name if policy else None,
        "amount": format_money(invoice.amount_sats, "SAT"),
        "checkout_url": invoice.checkout_url,
        "invoice_id": invoice.id,
    }


# --- thank-you page ---------------------------------------------------------------------------


def poll_interval(elapsed_seconds: float) -> int | None:
    """web.md 7.3: how often the receipt looks again, by how long it has waited."""
    if elapsed_seconds < 120:
        return 3
    if elapsed_seconds < 600:
        return 10
    if elapsed_seconds < 1800:
        return 30
    return None


def waiting_message(elapsed_seconds: float) -> str:
    if elapsed_seconds < 120:
        return "Waiting for your payment…"
    if elapsed_seconds < 600:
        return (
            "Still waiting. If you paid on-chain, your transaction is probably waiting for a block."
        )
    if elapsed_seconds < 1800:
        return (
            "This is taking longer than usual. You can close this page and come back to this "
            "address later."
        )
    return "Refresh this page to check again."


WAITING_HEADINGS = {
    "purchase": "Issuing your license…",
    "renewal": "Renewing your subscription…",
    "tier_change": "Applying your upgrade…",
}


@dataclass
class Receipt:
    """What the thank-you page shows for one invoice (web.md 7)."""

    state: str  # missing, unknown, pending, issuing, inactive, failed, ready
    invoice_id: str | None = None
    heading: str = ""
    provider_help: str | None = None
    waiting: str | None = None
    refresh_seconds: int | None = None
    retry_url: str | None = None
    key: str | None = None
    product_name: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _retry_url(product: Product | None, policy: Policy | None) -> str | None:
    if product is None:
        return None
    url = f"/buy/{quote(product.slug, safe='')}"
    return f"{url}?{urlencode({'policy': policy.slug})}" if policy is not None else url


def _success(
    receipt: Receipt,
    invoice: Invoice,
    row: License,
    product: Product | None,
    policy: Policy | None,
) -> None:
    tier = policy.name if policy else (product.name if product else "")
    currency = wire_currency(product) if product else "SAT"
    receipt.state = "ready"
    receipt.heading = "Your license is ready."
    receipt.facts.append(("Tier", tier))
    paid_through = format_date(row.expires_at) if row.expires_at else None
    if invoice.kind == "renewal":
        receipt.heading = "Renewal received."
        if paid_through:
            receipt.facts.append(("Paid through", paid_through))
            receipt.notes.append(
                f"Your license is paid through {paid_through}. Apps that check online pick "
                "this up automatically. The key below carries the new date, for apps that "
                "work offline."
            )
        return
    if invoice.kind == "tier_change":
        receipt.heading = f"Upgrade applied: you're now on {tier}."
        receipt.notes.append(
            f"Your license now includes {tier} features. If your app works offline, replace "
            "your old key with this one."
        )
    if row.is_trial and paid_through:
        receipt.facts.append(("Free trial until", paid_through))
        if policy is not None and product is not None and policy.is_recurring:
            then = format_price(
                effective_price(product, policy), currency, policy.renewal_period_days
            )
            receipt.facts.append(("Then", then))
    elif paid_through:
        receipt.facts.append(("Expires", paid_through))
    else:
        receipt.facts.append(("Expires", "Perpetual"))
    if policy is not None and policy.is_recurring and paid_through and not row.is_trial:
        receipt.notes.append(
            f"{renews_line(policy.renewal_period_days)}; next renewal {paid_through}."
        )


async def receipt_context(state: AppState, raw_id: str | None) -> tuple[dict[str, Any], Brand]:
    invoice_id = normalize_id(raw_id) if raw_id else None
    async with state.db.read() as session:
        if invoice_id is None:
            chrome, brand = await chrome_for(session, state.settings.operator_name, None)
            return {"chrome": chrome, "receipt": Receipt("missing")}, brand
        invoice = await session.get(Invoice, invoice_id)
        product = await session.get(Product, invoice.product_id) if invoice else None
        policy = (
            await session.get(Policy, invoice.policy_id) if invoice and invoice.policy_id else None
        )
        chrome, brand = await chrome_for(session, state.settings.operator_name, product)
        receipt = Receipt("unknown", invoice_id=invoice_id)
        if invoice is None:
            return {"chrome": chrome, "receipt": receipt}, brand
        receipt.product_name = product.name if product else ""
        row = await invoice_license(session, invoice)
        key = None
        if row is not None and row.status == "active" and invoice.status == "settled":
            key = license_key(row, await state.issuer_keys.current(session))
        provider = invoice.provider_kind
        if provider == "none":
            default_providers = await providers_of(session, (await default_profile(session)).id)
            provider = default_providers[0].kind if default_providers else "sandbox"
    waiting = WAITING_HEADINGS.get(invoice.kind, WAITING_HEADINGS["purchase"])
    if invoice.status in ("expired", "invalid"):
        receipt.state = "failed"
        receipt.heading = "This payment was not completed."
        receipt.retry_url = _retry_url(product, policy)
    elif invoice.status == "pending":
        elapsed = (now() - invoice.created_at).total_seconds()
        receipt.state = "pending"
        receipt.heading = waiting
        receipt.provider_help = PROVIDER_HELP.get(provider)
        receipt.waiting = waiting_message(elapsed)
        receipt.refresh_seconds = poll_interval(elapsed)
    elif key is not None and row is not None:
        receipt.key = key
        _success(receipt, invoice, row, product, policy)
    elif row is not None:
        receipt.state = "inactive"
        receipt.heading = "Your payment was received, but this license is not active."
    else:
        elapsed = (now() - (invoice.settled_at or invoice.created_at)).total_seconds()
        receipt.state = "issuing"
        receipt.heading = "Payment confirmed — issuing your license…"
        receipt.refresh_seconds = poll_interval(elapsed)
    return {"chrome": chrome, "receipt": receipt}, brand


# --- recover page -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovered:
    key: str
    product_name: str
    expires: str
    entitlements: list[str]


async def recovered_view(state: AppState, answer: Mapping[str, Any]) -> Recovered:
    """POST /v1/recover's answer, named for people: product and catalog display names."""
    async with state.db.read() as session:
        product = await session.get(Product, answer["product_id"])
    names = {
        entry.get("slug"): entry.get("name")
        for entry in (product.entitlements_catalog or [] if product else [])
    }
    expires = answer["expires_at"]
    return Recovered(
        key=answer["license_key"],
        product_name=product.name if product else "",
        expires=format_date(datetime.fromisoformat(expires)) if expires else "Perpetual",
        entitlements=[names.get(slug) or slug for slug in answer["entitlements"]],
    )


async def operator_chrome(state: AppState) -> Chrome:
    async with state.db.read() as session:
        chrome, _ = await chrome_for(session, state.settings.operator_name, None)
    return chrome


# --- sandbox checkout -------------------------------------------------------------------------


async def checkout_extras(
    session: AsyncSession, operator_name: str | None, invoice: Invoice | None
) -> tuple[Chrome, Brand, str | None, str | None]:
    """The checkout page's chrome, listed fiat price and discount line with its code."""
    product = await session.get(Product, invoice.product_id) if invoice else None
    chrome, brand = await chrome_for(session, operator_name, product)
    listed = None
    if invoice is not None and invoice.listed_currency and invoice.listed_value is not None:
        listed = format_money(invoice.listed_value, invoice.listed_currency)
    discount = None
    if invoice is not None and invoice.discount_applied_sats:
        code = (
            await session.execute(
                sa.select(DiscountCode.code)
                .join(DiscountRedemption, DiscountRedemption.code_id == DiscountCode.id)
                .where(DiscountRedemption.invoice_id == invoice.id)
            )
        ).scalar_one_or_none()
        off = format_money(invoice.discount_applied_sats, "SAT")
        discount = f"{off} off with code {code}" if code else f"{off} off"
    return chrome, brand, listed, discount
