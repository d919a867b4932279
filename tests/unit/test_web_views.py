"""What the buy page shows, from the public tier list (web.md 6.3-6.7)."""

from __future__ import annotations

from typing import Any

import pytest

from keysat.web.views import (
    initial_tier,
    methods_line,
    payment_setup,
    preview_view,
    tier_card,
)


def tier(**fields: Any) -> dict[str, Any]:
    """One Policy of GET /v1/products/{slug}/policies, SAT-priced by default."""
    base: dict[str, Any] = {
        "slug": "pro",
        "name": "Pro",
        "description": "",
        "price_sats": 50_000,
        "price_currency": "SAT",
        "duration_seconds": 0,
        "max_machines": 1,
        "is_trial": False,
        "entitlements": [],
        "marketing_bullets": [],
        "marketing_bullets_position": "above",
        "hidden_entitlements": [],
        "highlighted": False,
        "is_recurring": False,
        "renewal_period_days": 0,
        "trial_days": 0,
        "featured_discount": None,
    }
    base.update(fields)
    return base


def featured(kind: str, amount: int, off: int, price: int, remaining: int | None) -> dict[str, Any]:
    return {
        "code": "LAUNCH",
        "kind": kind,
        "amount": amount,
        "remaining_uses": remaining,
        "discount_applied_sats": off,
        "discounted_price_sats": price - off,
    }


CATALOG = {
    "sync": {"slug": "sync", "name": "Cloud sync", "description": "Everywhere"},
    "beta": {"slug": "beta", "name": "Beta", "description": ""},
}


def card(data: dict[str, Any], **options: Any) -> Any:
    return tier_card(0, data, CATALOG, highlighted=False, trial_once=False, **options)


def test_a_paid_tier() -> None:
    shown = card(tier(duration_seconds=365 * 86_400, max_machines=3))
    assert (shown.kind, shown.price, shown.cta) == ("paid", "50,000 sats", None)
    assert [line.text for line in shown.meta] == ["365 days", "Up to 3 devices"]
    assert (shown.price_view.label, shown.price_view.main) == ("Price · Pro", "50,000 sats")


def test_a_recurring_fiat_tier_with_a_trial() -> None:
    shown = card(
        tier(
            price_sats=2500,
            price_currency="USD",
            is_recurring=True,
            renewal_period_days=30,
            trial_days=14,
            max_machines=0,
        )
    )
    assert shown.kind == "trial" and shown.cta == "Start 14-day free trial"
    assert shown.price == "$25 / mo"
    assert [(line.text, line.accent) for line in shown.meta] == [
        ("Renews monthly", False),
        ("14-day free trial", True),
        ("Unlimited devices", False),
    ]
    assert (shown.price_view.main, shown.price_view.then) == ("Free for 14 days", "then $25 / mo")


def test_a_free_tier_and_the_trial_flag() -> None:
    shown = card(tier(price_sats=0, is_trial=True))
    assert (shown.kind, shown.price, shown.cta) == ("free", "Free", "Get free license")
    assert [(line.text, line.accent) for line in shown.meta][1] == ("Trial", True)


def test_features_merge_bullets_and_visible_entitlements() -> None:
    data = tier(
        entitlements=["sync", "beta", "raw"],
        hidden_entitlements=["beta"],
        marketing_bullets=["Fast"],
    )
    assert [(f.text, f.detail) for f in card(data).features] == [
        ("Fast", None),
        ("Cloud sync", "Everywhere"),
        ("raw", None),
    ]
    below = card({**data, "marketing_bullets_position": "below"})
    assert [f.text for f in below.features] == ["Cloud sync", "raw", "Fast"]


@pytest.mark.parametrize(
    ("offer", "ribbon", "price", "tag", "remaining"),
    [
        (
            featured("percent", 2000, 10_000, 50_000, 7),
            "20% OFF",
            "40,000 sats",
            "20% off",
            "Limited discount: 7 remaining",
        ),
        (
            featured("fixed_sats", 5000, 5000, 50_000, None),
            "LAUNCH SPECIAL",
            "45,000 sats",
            "5,000 sats off",
            None,
        ),
        (
            featured("set_price", 9000, 41_000, 50_000, 0),
            "LIMITED PRICE",
            "9,000 sats",
            "Flat price",
            None,
        ),
        (
            featured("free_license", 0, 50_000, 50_000, 3),
            "FREE",
            "Free",
            "Free",
            "Limited discount: 3 remaining",
        ),
    ],
)
def test_featured_discounts(
    offer: dict[str, Any], ribbon: str, price: str, tag: str, remaining: str | None
) -> None:
    shown = card(tier(featured_discount=offer))
    assert shown.featured is not None
    assert (shown.featured.ribbon, shown.featured.remaining) == (ribbon, remaining)
    assert (shown.original_price, shown.price) == ("50,000 sats", price)
    assert (shown.price_view.original, shown.price_view.main, shown.price_view.tag) == (
        "50,000 sats",
        price,
        tag,
    )
    assert shown.kind == ("free" if price == "Free" else "paid")


def test_featured_discount_keeps_the_cadence() -> None:
    shown = card(
        tier(
            price_sats=2500,
            price_currency="USD",
            is_recurring=True,
            renewal_period_days=30,
            featured_discount=featured("percent", 2000, 500, 2500, None),
        )
    )
    assert (shown.original_price, shown.price) == ("$25 / mo", "$20 / mo")


def test_fiat_price_shows_cached_sats_estimate() -> None:
    shown = card(tier(price_sats=2500, price_currency="USD"), centibps=1_000_000_000)
    assert shown.price_view.approx == "≈ 25,000 sats"
    assert card(tier()).price_view.approx is None


def preview(kind: str, base: int, off: int, pct: float | None = None) -> dict[str, Any]:
    return {
        "valid": True,
        "kind": kind,
        "is_free": base == off,
        "base_price_sats": base,
        "discount_applied_sats": off,
        "final_price_sats": base - off,
        "amount_pct": pct,
    }


def test_previews_of_a_sat_tier() -> None:
    base = card(tier()).price_view
    percent = preview_view(base, 50_000, "SAT", 0, preview("percent", 50_000, 12_500, 25.0))
    assert (percent.original, percent.main, percent.tag) == (
        "50,000 sats",
        "37,500 sats",
        "25% off",
    )
    fixed = preview_view(base, 50_000, "SAT", 0, preview("fixed_sats", 50_000, 5000))
    assert (fixed.main, fixed.tag) == ("45,000 sats", "5,000 sats off")
    free = preview_view(base, 50_000, "SAT", 0, preview("free_license", 50_000, 50_000))
    assert (free.main, free.tag, free.is_free) == ("Free", "Free", True)
    useless = preview_view(base, 50_000, "SAT", 0, preview("set_price", 50_000, 0))
    assert useless is base


def test_previews_of_a_fiat_tier() -> None:
    base = card(tier(price_sats=2500, price_currency="USD")).price_view
    percent = preview_view(base, 2500, "USD", 30, preview("percent", 25_000, 6250, 25.0))
    assert (percent.original, percent.main, percent.tag) == ("$25 / mo", "$18.75 / mo", "25% off")
    fixed = preview_view(base, 2500, "USD", 0, preview("fixed_sats", 25_000, 10_000))
    assert (fixed.original, fixed.main, fixed.note) == ("$25", "15,000 sats", "at today's rate")


def test_rails_and_labels_follow_the_providers() -> None:
    sandbox = payment_setup([], {}, sandbox=True)
    assert (sandbox.ready, sandbox.paid_label, sandbox.picker_rails) == (
        True,
        "Continue to sandbox checkout",
        [],
    )
    none = payment_setup([], {}, sandbox=False)
    assert (none.ready, none.paid_label) == (False, "Payments aren't set up yet")
    btcpay = payment_setup([("b", "btcpay")], {}, sandbox=False)
    assert (btcpay.paid_label, btcpay.picker_rails, btcpay.default_rail) == (
        "Pay with Bitcoin",
        [],
        "lightning",
    )
    assert btcpay.methods_line == "Pay with Lightning or on-chain bitcoin"
    zaprite = payment_setup([("z", "zaprite")], {}, sandbox=False)
    assert (zaprite.paid_label, zaprite.methods_line) == (
        "Continue to payment",
        "Pay by card, Lightning or on-chain bitcoin",
    )
    both = payment_setup([("b", "btcpay"), ("z", "zaprite")], {}, sandbox=False)
    assert (both.picker_rails, both.default_rail, both.card_label) == (
        ["lightning", "onchain", "card"],
        "lightning",
        "Pay by card",
    )
    zaprite_for_all = payment_setup(
        [("b", "btcpay"), ("z", "zaprite")], {"lightning": "z", "onchain": "z"}, sandbox=False
    )
    assert zaprite_for_all.picker_rails == []


def test_methods_line() -> None:
    assert methods_line(["lightning"]) == "Pay with Lightning"
    assert methods_line(["card"]) == "Pay by card"


def test_initial_tier_prefers_the_deep_link_then_the_highlight() -> None:
    cards = [
        tier_card(i, tier(slug=slug), CATALOG, highlighted=lit, trial_once=False)
        for i, (slug, lit) in enumerate([("a", False), ("b", True), ("c", False)])
    ]
    assert initial_tier(cards, "c") == 2
    assert initial_tier(cards, "zzz") == 1
    assert initial_tier(cards, None) == 1
    assert initial_tier([cards[0], cards[2]], None) == 0
