"""Money arithmetic against the worked examples of billing.md 12 and payments.md 4.3-4.4."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keysat.billing.pricing import (
    btc_string_to_sats,
    discount_sats,
    fiat_to_sats,
    percent_text,
    rate_centibps,
    sats_to_btc_string,
)


@pytest.mark.parametrize(
    ("cents", "units_per_btc", "centibps", "sats"),
    [
        (2_500, "50000", 500_000_000, 50_000),  # A1
        (4_900, "50000", 500_000_000, 98_000),  # A2
        (4_900, "65000", 650_000_000, 75_385),  # A3: 75 384.615... rounds up
        (5_000, "65000", 650_000_000, 76_923),  # A4: 76 923.08 rounds down
        (100, "64000", 640_000_000, 1_563),  # A5: exactly 1 562.5, half up
        (1_000, "97123.45678", 971_234_568, 10_296),  # A6: rate rounded first
        (1, "50000", 500_000_000, 20),  # A7
        (7_500, "50000", 500_000_000, 150_000),  # A8
    ],
)
def test_conversion_examples(cents: int, units_per_btc: str, centibps: int, sats: int) -> None:
    assert rate_centibps(Decimal(units_per_btc)) == centibps
    assert fiat_to_sats(cents, centibps) == sats


@given(st.integers(0, 10**12), st.integers(1, 10**13))
def test_conversion_is_round_half_up_of_the_exact_quotient(cents: int, centibps: int) -> None:
    exact = Decimal(cents) * Decimal(10**10) / Decimal(centibps)
    sats = fiat_to_sats(cents, centibps)
    assert abs(Decimal(sats) - exact) <= Decimal("0.5")
    if Decimal(sats) - exact == Decimal("-0.5"):
        pytest.fail("a tie rounded down")


@pytest.mark.parametrize(
    ("sats", "text"),
    [(1, "0.00000001"), (50_000, "0.00050000"), (123_456_789, "1.23456789"), (0, "0.00000000")],
)
def test_btc_strings(sats: int, text: str) -> None:
    assert sats_to_btc_string(sats) == text


@pytest.mark.parametrize(
    ("text", "sats"),
    [
        ("0.00050000", 50_000),
        ("0.000500004", 50_000),
        ("0.000500005", 50_001),
        ("0", None),
        ("-0.1", None),
        ("abc", None),
        ("NaN", None),
        ("1.23456789", 123_456_789),
    ],
)
def test_btc_amounts_read_from_providers(text: str, sats: int | None) -> None:
    assert btc_string_to_sats(text) == sats


@given(st.integers(0, 21 * 10**14))
def test_btc_string_round_trip(sats: int) -> None:
    text = sats_to_btc_string(sats)
    assert btc_string_to_sats(text) == (sats if sats > 0 else None)


@pytest.mark.parametrize(
    ("base", "kind", "amount", "discount", "final"),
    [
        (50_000, "percent", 2_500, 12_500, 37_500),  # C1
        (10_001, "percent", 3_333, 3_333, 6_668),  # C2
        (50_000, "percent", 10_000, 50_000, 0),  # C3
        (50_000, "fixed_sats", 20_000, 20_000, 30_000),  # C4
        (50_000, "fixed_sats", 60_000, 50_000, 0),  # C5
        (50_000, "set_price", 30_000, 20_000, 30_000),  # C6
        (50_000, "set_price", 60_000, 0, 50_000),  # C7
        (50_000, "fixed_sats", 10_000, 10_000, 40_000),  # C8, after converting 500 cents
        (98_000, "percent", 5_000, 49_000, 49_000),  # C9
        (50_000, "free_license", 0, 50_000, 0),
    ],
)
def test_discount_examples(base: int, kind: str, amount: int, discount: int, final: int) -> None:
    result = discount_sats(kind, base, amount)
    assert (result.discount_sats, result.final_sats) == (discount, final)


@given(
    st.sampled_from(["percent", "fixed_sats", "set_price", "free_license"]),
    st.integers(0, 10**12),
    st.integers(0, 10**12),
)
def test_discounts_stay_within_the_base(kind: str, base: int, amount: int) -> None:
    result = discount_sats(kind, base, amount)
    assert 0 <= result.discount_sats <= base
    assert result.final_sats == base - result.discount_sats


def test_c8_fiat_code_amount_converted_at_the_purchase_rate() -> None:
    centibps = rate_centibps(Decimal("50000"))
    assert fiat_to_sats(2_500, centibps) == 50_000
    off = fiat_to_sats(500, centibps)
    assert discount_sats("fixed_sats", 50_000, off).final_sats == 40_000


@pytest.mark.parametrize(
    ("bps", "text"),
    [(2_500, "25"), (1_250, "12.5"), (3_333, "33.33"), (10_000, "100"), (5, "0.05")],
)
def test_percent_text(bps: int, text: str) -> None:
    assert percent_text(bps) == text
