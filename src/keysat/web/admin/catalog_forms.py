"""Form rules shared by the Products and Policies screens (web.md 11.5.2-11.5.3): prices typed
in normal units and sent in the smallest unit, slugs, the entitlement catalog rows, and the
cap pre-check. Plain functions: the server still validates everything again."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

CURRENCIES = ("SAT", "USD", "EUR")
DEFAULT_AMOUNTS = {"SAT": "50000", "USD": "49.00", "EUR": "49.00"}
SLUG = re.compile(r"[A-Za-z0-9._-]{1,128}")
ENTITLEMENT = re.compile(r"[a-z0-9_]+")


class FieldError(ValueError):
    """A value the form can tell is wrong before asking the server."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse_amount(text: str, currency: str, field: str = "price") -> int:
    """A price typed in normal units ("49.99", "50,000") in the smallest unit: sats are whole
    numbers, dollars and euros have at most two decimals and become cents."""
    cleaned = text.strip().replace(",", "").replace("_", "").replace(" ", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise FieldError(field, "Enter a number, for example 49.99.") from None
    if not value.is_finite() or value < 0:
        raise FieldError(field, "Enter a price of zero or more.")
    if currency == "SAT":
        if value != value.to_integral_value():
            raise FieldError(field, "Sats are whole numbers.")
        return int(value)
    cents = value * 100
    if cents != cents.to_integral_value():
        raise FieldError(field, f"{currency} prices have at most two decimals.")
    return int(cents)


def amount_text(value: int | None, currency: str) -> str:
    """The smallest unit back in the normal units a form shows: 4999 cents → "49.99"."""
    if value is None:
        return ""
    if currency == "SAT":
        return str(value)
    return f"{Decimal(value) / 100:.2f}"


def catalog_rows(values: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """The catalog editor's rows as posted (`ent_slug`, `ent_name`, `ent_description`
    repeated, in order), without the blank ones."""
    slugs = values.get("ent_slug", [])
    names = values.get("ent_name", [])
    notes = values.get("ent_description", [])
    rows = []
    for index, slug in enumerate(slugs):
        row = {
            "slug": slug.strip(),
            "name": names[index].strip() if index < len(names) else "",
            "description": notes[index].strip() if index < len(notes) else "",
        }
        if any(row.values()):
            rows.append(row)
    return rows


def check_catalog(rows: Sequence[Mapping[str, str]]) -> None:
    seen: set[str] = set()
    for row in rows:
        slug = row["slug"]
        if not ENTITLEMENT.fullmatch(slug):
            raise FieldError(
                "catalog",
                f"Entitlement slug '{slug}' may use only lowercase letters, digits and _.",
            )
        if slug in seen:
            raise FieldError("catalog", f"Entitlement slug '{slug}' is listed twice.")
        seen.add(slug)


def check_slug(slug: str) -> None:
    if not SLUG.fullmatch(slug):
        raise FieldError(
            "slug", "Use up to 128 letters, digits, hyphens, underscores or dots, without spaces."
        )


@dataclass(frozen=True)
class CapNotice:
    """The cap pre-check card or the grandfather banner (web.md 11.3)."""

    kind: str  # "approaching", "reached" or "over"
    usage: int
    cap: int


def cap_notice(usage: int, cap: int | None) -> CapNotice | None:
    if cap is None or usage < cap - 1:
        return None
    if usage > cap:
        return CapNotice("over", usage, cap)
    return CapNotice("reached" if usage == cap else "approaching", usage, cap)
