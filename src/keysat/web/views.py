"""What the buy page shows, built from the public tier list (public-api.md 4.3) and the
profile's providers: tier cards, price blocks, call-to-action labels and the rail picker
(web.md 6.3-6.7). Pure functions over plain data, so the cards always agree with the API
answer they are built from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keysat.billing.pricing import fiat_to_sats
from keysat.payments.provider import RAILS, SERVED_RAILS
from keysat.web.format import (
    discount_tag,
    format_devices,
    format_duration,
    format_money,
    format_price,
    percent_off,
    renews_line,
    ribbon_text,
)

RAIL_LABELS = {"lightning": "Lightning", "onchain": "On-chain bitcoin", "card": "Card"}
RAIL_PHRASES = {"lightning": "Lightning", "onchain": "on-chain bitcoin", "card": "card"}
FREE_LABEL = "Get free license"
# A trial starts free and its subscription records the regular price: codes play no part.
TRIAL_NO_CODES = "Codes don't apply to free trials."


@dataclass(frozen=True)
class PriceView:
    """One price block of the price card (web.md 6.5)."""

    label: str
    main: str
    original: str | None = None
    tag: str | None = None
    then: str | None = None
    note: str | None = None
    approx: str | None = None

    @property
    def is_free(self) -> bool:
        return self.main == "Free"


@dataclass(frozen=True)
class Feature:
    text: str
    detail: str | None = None


@dataclass(frozen=True)
class MetaLine:
    text: str
    accent: bool = False


@dataclass(frozen=True)
class Featured:
    code: str
    ribbon: str
    remaining: str | None


@dataclass(frozen=True)
class TierCard:
    index: int
    slug: str
    name: str
    kind: str  # "free", "trial" or "paid": what the call-to-action does for this tier
    price: str
    original_price: str | None
    meta: list[MetaLine]
    description: str
    features: list[Feature]
    featured: Featured | None
    highlighted: bool
    trial_once: bool
    price_view: PriceView
    cta: str | None  # the label for free and trial tiers; paid tiers follow the payment setup
    data: dict[str, Any] = field(default_factory=dict)  # what buyer.js needs about this tier


@dataclass(frozen=True)
class PaymentSetup:
    """How paid tiers are paid on this product's merchant profile (web.md 6.6-6.7)."""

    ready: bool
    picker_rails: list[str]
    default_rail: str | None
    methods_line: str
    paid_label: str
    card_label: str | None = None  # with a picker: the label while "card" is chosen


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def methods_line(rails: Sequence[str]) -> str:
    """ "Pay with Lightning or on-chain bitcoin", "Pay by card, Lightning or on-chain bitcoin"."""
    ordered = [rail for rail in ("card", "lightning", "onchain") if rail in rails]
    phrases = [RAIL_PHRASES[rail] for rail in ordered]
    return ("Pay by " if ordered[0] == "card" else "Pay with ") + _join(phrases)


def payment_setup(
    providers: Sequence[tuple[str, str]],
    preferences: Mapping[str, str],
    *,
    sandbox: bool,
) -> PaymentSetup:
    """`providers` are the profile's eligible (id, kind) pairs, earliest connected first;
    `preferences` maps a rail to a provider id. Mirrors the choice of payments.md 2.5."""
    if not providers:
        if sandbox:
            return PaymentSetup(
                ready=True,
                picker_rails=[],
                default_rail=None,
                methods_line="Sandbox checkout: the payment is simulated, no money moves",
                paid_label="Continue to sandbox checkout",
            )
        return PaymentSetup(
            ready=False,
            picker_rails=[],
            default_rail=None,
            methods_line="This seller hasn't finished setting up payments. Please try again later.",
            paid_label="Payments aren't set up yet",
        )
    kinds = dict(providers)
    handler: dict[str, str] = {}
    for rail in RAILS:
        preferred = preferences.get(rail)
        if preferred in kinds:
            handler[rail] = preferred
            continue
        serving = [pid for pid, kind in providers if rail in SERVED_RAILS[kind]]
        if serving:
            handler[rail] = serving[0]
    rails = [rail for rail in RAILS if rail in handler]
    default_rail = SERVED_RAILS[providers[0][1]][0]
    bitcoin_only = "card" not in rails
    if len(rails) > 1 and len(set(handler.values())) > 1:
        return PaymentSetup(
            ready=True,
            picker_rails=rails,
            default_rail=default_rail,
            methods_line=methods_line(rails),
            paid_label="Pay with Bitcoin",
            card_label="Pay by card",
        )
    if bitcoin_only:
        label = "Pay with Bitcoin"
    elif rails == ["card"]:
        label = "Pay by card"
    else:
        label = "Continue to payment"
    return PaymentSetup(
        ready=True,
        picker_rails=[],
        default_rail=default_rail,
        methods_line=methods_line(rails),
        paid_label=label,
    )


def approx_sats(price: int, currency: str, centibps: int | None) -> str | None:
    """ "≈ 38,500 sats" for a fiat price when a rate is already at hand (web.md 2.5)."""
    if centibps is None or currency in ("SAT", "BTC") or price == 0:
        return None
    return f"≈ {format_money(fiat_to_sats(price, centibps), 'SAT')}"


def _features(tier: Mapping[str, Any], catalog: Mapping[str, Mapping[str, str]]) -> list[Feature]:
    hidden = set(tier["hidden_entitlements"])
    entitlements = []
    for slug in tier["entitlements"]:
        if slug in hidden:
            continue
        entry = catalog.get(slug)
        if entry is None:
            entitlements.append(Feature(slug))
        else:
            entitlements.append(Feature(entry["name"], entry.get("description") or None))
    bullets = [Feature(text) for text in tier["marketing_bullets"]]
    if tier["marketing_bullets_position"] == "below":
        return entitlements + bullets
    return bullets + entitlements


def _meta(tier: Mapping[str, Any]) -> list[MetaLine]:
    lines = []
    if tier["is_recurring"]:
        lines.append(MetaLine(renews_line(tier["renewal_period_days"])))
        if tier["trial_days"] > 0:
            lines.append(MetaLine(f"{tier['trial_days']}-day free trial", accent=True))
    else:
        lines.append(MetaLine(format_duration(tier["duration_seconds"])))
    if tier["is_trial"]:
        lines.append(MetaLine("Trial", accent=True))
    lines.append(MetaLine(format_devices(tier["max_machines"])))
    return lines


def tier_card(
    index: int,
    tier: Mapping[str, Any],
    catalog: Mapping[str, Mapping[str, str]],
    *,
    highlighted: bool,
    trial_once: bool,
    centibps: int | None = None,
) -> TierCard:
    """One card of the tier grid from one Policy of the public tier list."""
    currency = tier["price_currency"]
    period = tier["renewal_period_days"]
    price = tier["price_sats"]
    label = f"Price · {tier['name']}"
    starts_trial = tier["is_recurring"] and tier["trial_days"] > 0
    offer = None if starts_trial else tier["featured_discount"]
    featured = None
    original_price = None
    if starts_trial:
        kind = "trial"
        shown = price
        view = PriceView(
            label,
            f"Free for {tier['trial_days']} days",
            then=f"then {format_price(price, currency, period)}" if price else None,
        )
        cta: str | None = f"Start {tier['trial_days']}-day free trial"
    else:
        shown = offer["discounted_price_sats"] if offer else price
        kind = "free" if shown == 0 else "paid"
        cta = FREE_LABEL if kind == "free" else None
        if offer is not None:
            remaining = offer["remaining_uses"]
            featured = Featured(
                code=offer["code"],
                ribbon=ribbon_text(offer["kind"], offer["amount"], shown),
                remaining=f"Limited discount: {remaining} remaining" if remaining else None,
            )
            original_price = format_price(price, currency, period)
            off = offer["discount_applied_sats"]
            tag = discount_tag(offer["kind"], offer["amount"], off, currency, shown)
            view = PriceView(
                label,
                format_price(shown, currency, period),
                original=original_price,
                tag=tag,
                approx=approx_sats(shown, currency, centibps),
            )
        else:
            view = PriceView(
                label,
                format_price(price, currency, period),
                approx=approx_sats(price, currency, centibps),
            )
    return TierCard(
        index=index,
        slug=tier["slug"],
        name=tier["name"],
        kind=kind,
        price=format_price(shown, currency, period),
        original_price=original_price,
        meta=_meta(tier),
        description=tier["description"],
        features=_features(tier, catalog),
        featured=featured,
        highlighted=highlighted,
        trial_once=trial_once and (starts_trial or tier["is_trial"]),
        price_view=view,
        cta=cta,
        data={
            "slug": tier["slug"],
            "name": tier["name"],
            "kind": kind,
            "price": price,
            "period": period,
            "featured": featured.code if featured else None,
        },
    )


def product_price_view(name: str, price: int, currency: str, centibps: int | None) -> PriceView:
    """The price card of a product sold without tiers (web.md 6.1)."""
    return PriceView(
        f"Price · {name}",
        format_price(price, currency),
        approx=approx_sats(price, currency, centibps),
    )


def preview_view(
    base: PriceView, price: int, currency: str, period: int, preview: Mapping[str, Any]
) -> PriceView:
    """The price block after a valid code preview (web.md 6.6). The preview speaks in sats
    now; a fiat tier keeps its currency for percent codes and free results, and shows the
    preview's sats "at today's rate" otherwise."""
    kind = preview["kind"]
    bps = round(preview["amount_pct"] * 100) if preview.get("amount_pct") is not None else 0
    final_sats = preview["final_price_sats"]
    if preview["discount_applied_sats"] == 0 and final_sats > 0:
        return base
    sat_product = currency in ("SAT", "BTC")
    original = format_price(price, currency, period) if price else None
    if final_sats <= 0 or preview["is_free"]:
        return PriceView(base.label, "Free", original=original, tag="Free")
    if sat_product:
        off = preview["discount_applied_sats"]
        return PriceView(
            base.label,
            format_price(final_sats, "SAT", period),
            original=format_price(preview["base_price_sats"], "SAT", period),
            tag=discount_tag(kind, bps, off, "SAT", final_sats),
        )
    if kind == "percent":
        new_price = price - percent_off(price, bps)
        return PriceView(
            base.label,
            format_price(new_price, currency, period),
            original=original,
            tag=discount_tag(kind, bps, 0, currency, new_price),
        )
    return PriceView(
        base.label,
        format_price(final_sats, "SAT", period),
        original=original,
        tag=discount_tag(kind, bps, preview["discount_applied_sats"], "SAT", final_sats),
        note="at today's rate",
    )


def initial_tier(cards: Sequence[TierCard], requested: str | None) -> int:
    """web.md 6.3: the `?policy=` tier when shown, else the highlighted one, else the first."""
    for card in cards:
        if requested is not None and card.slug == requested:
            return card.index
    for card in cards:
        if card.highlighted:
            return card.index
    return 0
