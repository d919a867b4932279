"""Catalog rules as plain functions: prices, slugs, catalogs, entitlements, tips, ranges,
and the public tier card. No database."""

from __future__ import annotations

import string
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysat.catalog import service
from keysat.catalog.models import Policy, Product
from keysat.catalog.schemas import CatalogEntryIn
from keysat.errors import ApiError

RULES = settings(max_examples=200, deadline=None)
SLUG_ALPHABET = string.ascii_letters + string.digits + "-_."
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    assert caught.value.status == 400
    assert caught.value.code == "bad_request"
    return caught.value.message


def product(currency: str = "SAT", value: int = 1000, **fields: Any) -> Product:
    return Product(
        id="p",
        slug="app",
        name="App",
        description="",
        price_currency=currency,
        price_value=value,
        price_sats=value if currency in ("SAT", "BTC") else 0,
        active=True,
        product_metadata={},
        entitlements_catalog=None,
        created_at=T0,
        updated_at=T0,
        **fields,
    )


def policy(slug: str = "std", **fields: Any) -> Policy:
    values: dict[str, Any] = {
        "id": "x",
        "product_id": "p",
        "name": slug.title(),
        "slug": slug,
        "duration_seconds": 0,
        "grace_seconds": 0,
        "max_machines": 1,
        "is_trial": False,
        "price_sats_override": None,
        "entitlements": [],
        "policy_metadata": {},
        "active": True,
        "public": True,
        "archived_at": None,
        "tip_recipient": None,
        "tip_pct_bps": 0,
        "tip_label": None,
        "is_recurring": False,
        "renewal_period_days": 0,
        "grace_period_days": 7,
        "trial_days": 0,
        "tier_rank": None,
        "allow_repeat_trials": False,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return Policy(**values)


# --- price resolution ---------------------------------------------------------------------


@RULES
@given(st.integers(min_value=1, max_value=2**63 - 1))
def test_legacy_sats_price(value: int) -> None:
    assert service.resolve_price(value, None, None, allow_zero=False) == service.Price(
        "SAT", value, value
    )


@RULES
@given(
    st.sampled_from(["usd", "USD", " Eur ", "eur"]), st.integers(min_value=1, max_value=2**63 - 1)
)
def test_fiat_price_mirrors_zero_sats(currency: str, value: int) -> None:
    price = service.resolve_price(None, currency, value, allow_zero=False)
    assert price == service.Price(currency.strip().upper(), value, 0)


@RULES
@given(st.integers(min_value=1, max_value=10**12), st.integers(min_value=1, max_value=10**12))
def test_both_forms_must_agree(sats: int, value: int) -> None:
    if sats == value:
        assert service.resolve_price(sats, "SAT", value, allow_zero=False) == service.Price(
            "SAT", value, value
        )
    else:
        assert "disagree" in refused(service.resolve_price, sats, "SAT", value, allow_zero=False)
    assert "disagree" in refused(service.resolve_price, sats, "USD", value, allow_zero=False)


def test_price_absent_or_incomplete() -> None:
    assert service.resolve_price(None, None, None, allow_zero=False) is None
    assert refused(service.resolve_price, None, "SAT", None, allow_zero=True) == (
        "bad request: price_currency requires price_value"
    )
    assert refused(service.resolve_price, 5, None, 5, allow_zero=True) == (
        "bad request: price_value requires price_currency"
    )
    assert refused(service.resolve_price, None, "btc", 5, allow_zero=True) == (
        "bad request: unsupported currency 'btc'; use SAT, USD or EUR"
    )


@pytest.mark.parametrize(("allow_zero", "zero_ok"), [(False, False), (True, True)])
def test_zero_and_negative_prices(allow_zero: bool, zero_ok: bool) -> None:
    if zero_ok:
        assert service.resolve_price(0, None, None, allow_zero=allow_zero) == service.Price(
            "SAT", 0, 0
        )
    else:
        assert "positive" in refused(service.resolve_price, 0, None, None, allow_zero=allow_zero)
    refused(service.resolve_price, -1, None, None, allow_zero=allow_zero)
    refused(service.resolve_price, None, "EUR", -1, allow_zero=allow_zero)


# --- slugs, names, descriptions -----------------------------------------------------------


@RULES
@given(st.text(alphabet=SLUG_ALPHABET, min_size=1, max_size=128))
def test_valid_slugs_are_kept(slug: str) -> None:
    assert service.clean_slug(f"  {slug}\t") == slug


@RULES
@given(st.text(min_size=1, max_size=40).filter(lambda s: any(c not in SLUG_ALPHABET for c in s)))
def test_other_characters_are_refused(text: str) -> None:
    refused(service.clean_slug, "a" + text + "a")


def test_slug_and_name_lengths() -> None:
    assert service.clean_slug("s" * 128) == "s" * 128
    assert "too long" in refused(service.clean_slug, "s" * 129)
    assert "empty" in refused(service.clean_slug, "   ")
    assert service.clean_name(" n ") == "n"
    assert service.clean_name("n" * 200) == "n" * 200
    assert "too long" in refused(service.clean_name, "n" * 201)
    assert service.clean_description(None) == ""
    assert service.clean_description("  kept  ") == "  kept  "
    assert "too long" in refused(service.clean_description, "d" * 10_001)


# --- catalog and entitlements -------------------------------------------------------------


def test_catalog_is_normalised_in_order() -> None:
    entries = [
        CatalogEntryIn(slug="b_2", name="B"),
        CatalogEntryIn(slug="a", name="", description="about a"),
    ]
    assert service.clean_catalog(entries) == [
        {"slug": "b_2", "name": "B", "description": ""},
        {"slug": "a", "name": "", "description": "about a"},
    ]
    assert service.clean_catalog([]) is None
    assert service.clean_catalog(None) is None


@pytest.mark.parametrize("slug", ["A", "a-b", "a b", " a", "\u00e9", "", "a" * 256])
def test_bad_catalog_slugs(slug: str) -> None:
    refused(service.clean_catalog, [CatalogEntryIn(slug=slug, name="x")])


def test_catalog_json_fills_missing_fields() -> None:
    assert service.catalog_json(None) is None
    assert service.catalog_json([]) is None
    assert service.catalog_json([{"slug": "a"}]) == [{"slug": "a", "name": "", "description": ""}]


@RULES
@given(
    st.lists(
        st.text(min_size=1, max_size=60).filter(lambda s: len(s.encode()) <= 255),
        max_size=20,
        unique=True,
    )
)
def test_distinct_entitlements_pass_unchanged(values: list[str]) -> None:
    assert service.check_entitlements(values) == values


def test_entitlement_limits() -> None:
    assert service.check_entitlements(["\u00e9" * 127 + "e"]) == ["\u00e9" * 127 + "e"]
    refused(service.check_entitlements, ["\u00e9" * 128])
    refused(service.check_entitlements, [""])
    refused(service.check_entitlements, ["a", "b", "a"])
    assert len(service.check_entitlements([str(i) for i in range(255)])) == 255
    refused(service.check_entitlements, [str(i) for i in range(256)])


def test_catalog_membership() -> None:
    catalog = [{"slug": "a", "name": "", "description": ""}]
    service.check_catalog_membership(["anything"], None)
    service.check_catalog_membership(["a"], catalog)
    service.check_catalog_membership([], catalog)
    message = refused(service.check_catalog_membership, ["a", "b", "c"], catalog)
    assert message.endswith(": b, c")


# --- ranges, recurring, tips --------------------------------------------------------------


@pytest.mark.parametrize(("field", "bounds"), list(service.POLICY_RANGES.items()))
def test_ranges_are_inclusive(field: str, bounds: tuple[int, int]) -> None:
    low, high = bounds
    service.check_range(field, low)
    service.check_range(field, high)
    refused(service.check_range, field, low - 1)
    refused(service.check_range, field, high + 1)


def test_recurring_rules() -> None:
    service.check_recurring(False, 0, 99)
    service.check_recurring(True, 1, 1)
    service.check_recurring(True, 1830, 0)
    assert "at least 1" in refused(service.check_recurring, True, 0, 0)
    assert "cannot exceed" in refused(service.check_recurring, True, 30, 31)
    assert "unreasonably large" in refused(service.check_range, "renewal_period_days", 1831)


@pytest.mark.parametrize(
    ("address", "valid"),
    [
        ("dev@example.com", True),
        ("A.b-c_d@x.Y", True),
        ("a@b", True),
        ("@b", False),
        ("a@", False),
        ("ab", False),
        ("a@b@c", False),
        ("a b@c", False),
        ("a+b@c", False),
        ("\u00e9@c", False),
        (" a@b", False),
    ],
)
def test_lightning_addresses(address: str, valid: bool) -> None:
    assert service.is_lightning_address(address) is valid


def test_tip_pairing() -> None:
    assert service.clean_tip(None, 0, None) == service.Tip(None, 0, None)
    assert service.clean_tip(" ", 0, "\t") == service.Tip(None, 0, None)
    assert service.clean_tip("a@b.c", 1, "Dev") == service.Tip("a@b.c", 1, "Dev")
    refused(service.clean_tip, "a@b.c", 0, None)
    refused(service.clean_tip, None, 1, None)
    refused(service.clean_tip, "a@b.c", 10_001, None)
    refused(service.clean_tip, "nope", 5, None)


# --- prices and the public card -----------------------------------------------------------


def test_effective_price() -> None:
    sats = product("SAT", 1000)
    assert service.effective_price(sats, None) == 1000
    assert service.effective_price(sats, policy()) == 1000
    assert service.effective_price(sats, policy(price_sats_override=0)) == 0
    assert service.effective_price(sats, policy(price_sats_override=7)) == 7
    usd = product("USD", 1999)
    assert usd.price_sats == 0
    assert service.effective_price(usd, None) == 1999
    assert service.effective_price(usd, policy(price_sats_override=500)) == 500
    assert service.effective_price(product("BTC", 300), None) == 300


def test_public_order_and_filter() -> None:
    base = product("SAT", 100)
    policies = [
        policy("c", name="Same"),
        policy("b", name="Same"),
        policy("a", name="Zed"),
        policy("cheap", price_sats_override=1),
        policy("hidden", public=False, price_sats_override=0),
        policy("off", active=False, price_sats_override=0),
        policy("old", archived_at=T0, price_sats_override=0),
    ]
    listed = service.public_tier_order(base, [p for p in policies if service.is_purchasable(p)])
    body = service.public_tiers_json(base, listed, {})
    assert [tier["slug"] for tier in body["policies"]] == ["cheap", "b", "c", "a"]
    assert body["product"]["entitlements_catalog"] == []


def test_public_card_reads_metadata_conventions() -> None:
    card = service.public_policy_json(
        product(),
        policy(
            policy_metadata={
                "description": "Blurb",
                "highlight": True,
                "marketing_bullets": ["x", 1, {"y": 2}, "z"],
                "marketing_bullets_position": "below",
                "hidden_entitlements": ["h", None],
            },
            is_recurring=False,
            renewal_period_days=30,
        ),
    )
    assert card["description"] == "Blurb"
    assert card["highlighted"] is True
    assert card["marketing_bullets"] == ["x", "z"]
    assert card["marketing_bullets_position"] == "below"
    assert card["hidden_entitlements"] == ["h"]
    assert card["renewal_period_days"] == 0
    assert card["featured_discount"] is None
    assert "id" not in card
    assert "tier_rank" not in card
