"""Pure money arithmetic: conversions, BTC amounts, discounts (payments.md 6.2, 4.3, 4.4;
billing.md 2.4). Integers and decimals only; a binary float never touches a price."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

SATS_PER_BTC = 100_000_000
SAT_CURRENCIES = frozenset({"SAT", "BTC"})
FIAT_CURRENCIES = frozenset({"USD", "EUR"})

DISCOUNT_KINDS = ("percent", "fixed_sats", "set_price", "free_license")
BPS_MAX = 10_000


def parse_decimal(text: str) -> Decimal | None:
    """A finite decimal from text, or None: providers and rate sources send strings."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        return None
    return value if value.is_finite() else None


def round_half_up(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def rate_centibps(units_per_btc: Decimal) -> int:
    """Whole currency units per BTC x 10 000, rounded half up (the invoice audit encoding)."""
    return round_half_up(units_per_btc * 10_000)


def fiat_to_sats(value: int, centibps: int) -> int:
    """Smallest-unit fiat (cents) to sats at `centibps`, rounded half up, in integers."""
    if centibps <= 0:
        raise ValueError("rate must be positive")
    return (2 * value * 10**10 + centibps) // (2 * centibps)


def sats_to_btc_string(sats: int) -> str:
    """Sats as BTC with exactly eight decimals: 1 -> "0.00000001"."""
    if sats < 0:
        raise ValueError("negative amount")
    return f"{sats // SATS_PER_BTC}.{sats % SATS_PER_BTC:08d}"


def btc_string_to_sats(text: str) -> int | None:
    """A BTC decimal string to sats, rounded half up; None when unusable or not positive."""
    value = parse_decimal(text)
    if value is None:
        return None
    sats = round_half_up(value * SATS_PER_BTC)
    return sats if sats > 0 else None


@dataclass(frozen=True)
class Discount:
    base_sats: int
    discount_sats: int

    @property
    def final_sats(self) -> int:
        return self.base_sats - self.discount_sats


def discount_sats(kind: str, base_sats: int, amount_sats: int) -> Discount:
    """What a code takes off a base price in sats (billing.md 2.4).

    `amount_sats` is the code's amount already in sats for `fixed_sats` and `set_price`,
    and basis points for `percent`. A `free_license` code takes everything.
    """
    if kind == "percent":
        off = base_sats * min(amount_sats, BPS_MAX) // BPS_MAX
    elif kind == "fixed_sats":
        off = min(amount_sats, base_sats)
    elif kind == "set_price":
        off = base_sats - amount_sats if amount_sats < base_sats else 0
    elif kind == "free_license":
        off = base_sats
    else:
        raise ValueError(f"unknown discount kind {kind!r}")
    return Discount(base_sats=base_sats, discount_sats=max(0, min(off, base_sats)))


def percent_text(bps: int) -> str:
    """Basis points as a percentage without trailing zeros: 2500 -> "25", 1250 -> "12.5"."""
    whole, rest = divmod(bps, 100)
    return str(whole) if rest == 0 else f"{whole}.{rest:02d}".rstrip("0")
