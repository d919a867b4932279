"""Plain helpers of the Subscriptions, Invoices and Discount codes screens (web.md 11.5.6-
11.5.8): names of products and tiers, filter links, grouping per product, amounts typed in
normal units, and code labels. Nothing here calls the API except `load_catalog`, which
reads through the screen's own `AdminApi`."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from keysat.billing.pricing import percent_text
from keysat.web.admin.api import AdminApi
from keysat.web.format import cadence_suffix, format_money

PAGE_SIZE = 100
ANY_PRODUCT = "any"
CURRENCIES = ("SAT", "USD", "EUR")


@dataclass(frozen=True)
class Catalog:
    """Every product and tier (inactive and archived ones included), to name ids."""

    products: list[dict[str, Any]]
    policies: dict[str, dict[str, Any]]

    def product(self, product_id: str | None) -> dict[str, Any] | None:
        return next((p for p in self.products if p["id"] == product_id), None)

    def product_by_slug(self, slug: str | None) -> dict[str, Any] | None:
        return next((p for p in self.products if p["slug"] == slug), None)

    def product_name(self, product_id: str | None) -> str:
        found = self.product(product_id)
        return str(found["name"]) if found else "Unknown product"

    def policy_name(self, policy_id: str | None) -> str:
        found = self.policies.get(policy_id or "")
        return str(found["name"]) if found else "—"

    def policies_of(self, product_id: str) -> list[dict[str, Any]]:
        return [p for p in self.policies.values() if p["product_id"] == product_id]


async def load_catalog(api: AdminApi) -> Catalog:
    products = (await api.get("/v1/admin/products"))["products"]
    policies: dict[str, dict[str, Any]] = {}
    for product in products:
        listing = await api.get(
            "/v1/admin/policies",
            product_slug=product["slug"],
            include_inactive="true",
            include_archived="true",
        )
        policies.update({policy["id"]: policy for policy in listing["policies"]})
    return Catalog(products, policies)


def link(base: str, query: dict[str, str | None], **changes: str | None) -> str:
    """The current view's URL with some query values changed (None drops one); paging
    starts over whenever a filter changes."""
    values = {**query, **changes}
    values.pop("offset", None)
    kept = {name: value for name, value in values.items() if value}
    return base + ("?" + urlencode(kept) if kept else "")


def product_pills(
    base: str,
    query: dict[str, str | None],
    catalog: Catalog,
    counts: Counter[str],
    *,
    any_product: int | None = None,
) -> list[tuple[str, str, str]]:
    """All, then each product that has rows (with its count); `any_product` adds the
    "Any product" pill of the discount codes."""
    total = sum(counts.values()) + (any_product or 0)
    pills = [("", f"All · {total:,}", link(base, query, product=None))]
    for product in catalog.products:
        if counts.get(product["id"]):
            label = f"{product['name']} · {counts[product['id']]:,}"
            pills.append((product["id"], label, link(base, query, product=product["id"])))
    if any_product:
        pills.append(
            (ANY_PRODUCT, f"Any product · {any_product:,}", link(base, query, product=ANY_PRODUCT))
        )
    return pills


@dataclass(frozen=True)
class Group:
    title: str
    rows: list[dict[str, Any]]


def grouped(
    rows: list[dict[str, Any]],
    catalog: Catalog,
    product_of: Callable[[dict[str, Any]], str | None] = lambda row: row.get("product_id"),
    *,
    any_title: str = "Any product",
) -> list[Group]:
    """One card per product in name order (web.md 11.3); one product gives one untitled
    card, the flat table."""
    by_product: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        by_product.setdefault(product_of(row), []).append(row)
    if len(by_product) <= 1 and None not in by_product:
        return [Group("", rows)] if rows else []
    order = [p["id"] for p in catalog.products if p["id"] in by_product]
    order += [key for key in by_product if key is not None and key not in order]
    groups = [Group(catalog.product_name(key), by_product[key]) for key in order]
    if None in by_product:
        groups.append(Group(any_title, by_product[None]))
    return groups


def page_of(rows: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    return rows[offset : offset + PAGE_SIZE]


def offset_of(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


def parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def cadence_text(period_days: int) -> str:
    """ "Monthly", "Every 45 days": the table's cadence column."""
    return {7: "Weekly", 30: "Monthly", 90: "Quarterly", 180: "Every 6 months", 365: "Yearly"}.get(
        period_days, f"Every {period_days} days"
    )


def listed_price(value: int, currency: str, period_days: int) -> str:
    return format_money(value, currency) + cadence_suffix(period_days)


# --- invoices ---------------------------------------------------------------------------------

INVOICE_STATUSES = (
    ("", "All"),
    ("pending", "Pending"),
    ("settled", "Settled"),
    ("expired", "Expired"),
    ("invalid", "Invalid"),
)
INVOICE_KINDS = (
    ("", "All"),
    ("purchase", "Purchase"),
    ("renewal", "Renewal"),
    ("tier_change", "Tier change"),
)
INVOICE_TONES = {"pending": "warn", "settled": "ok", "expired": "neutral", "invalid": "bad"}
KIND_NAMES = dict(INVOICE_KINDS[1:])
PROVIDER_NAMES = {
    "none": "None (free)",
    "sandbox": "Sandbox",
    "btcpay": "BTCPay",
    "zaprite": "Zaprite",
}


def invoice_amount(invoice: dict[str, Any]) -> str:
    """Sats billed, and for a fiat invoice the listed amount the buyer saw."""
    sats = format_money(int(invoice["amount_sats"]), "SAT") if invoice["amount_sats"] else "Free"
    currency, value = invoice.get("listed_currency"), invoice.get("listed_value")
    if currency and currency != "SAT" and value is not None:
        return f"{sats} ({format_money(int(value), currency)})"
    return sats


def provider_text(invoice: dict[str, Any]) -> str:
    kind = invoice.get("provider_kind") or "—"
    name = PROVIDER_NAMES.get(kind, kind)
    rail = invoice.get("rail")
    return f"{name} · {rail}" if rail else name


def rate_text(centibps: int | None, currency: str | None) -> str | None:
    """Whole currency units per BTC, stored times 10 000 (admin-api.md 21.6)."""
    if centibps is None:
        return None
    per_btc = Decimal(centibps) / Decimal(10_000)
    unit = currency or ""
    return f"{per_btc:,.2f} {unit} per BTC".strip()


# --- discount codes ---------------------------------------------------------------------------

CODE_KINDS = (
    ("percent", "Percent off"),
    ("fixed_sats", "Fixed amount off"),
    ("set_price", "Set a flat price"),
    ("free_license", "Free license"),
)
KIND_LABELS = dict(CODE_KINDS)
CODE_STATUSES = (
    ("", "All"),
    ("active", "Active"),
    ("disabled", "Disabled"),
    ("expired", "Expired"),
    ("used_up", "Used up"),
)
CODE_TONES = {"active": "ok", "disabled": "neutral", "expired": "warn", "used_up": "warn"}
CODE_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def code_status(code: dict[str, Any], now: datetime) -> str:
    if not code["active"]:
        return "disabled"
    expires = parse_ts(code.get("expires_at"))
    if expires is not None and expires <= now:
        return "expired"
    if code.get("max_uses") is not None and code["used_count"] >= code["max_uses"]:
        return "used_up"
    return "active"


def code_amount_text(code: dict[str, Any]) -> str:
    """ "50%", "5,000 sats off", "$10 off", "$19 flat", "Free" (web.md 11.5.8)."""
    kind, amount = code["kind"], int(code["amount"])
    currency = code.get("discount_currency") or "SAT"
    if kind == "percent":
        return f"{percent_text(amount)}%"
    if kind == "fixed_sats":
        return f"{format_money(amount, currency)} off"
    if kind == "set_price":
        return f"{format_money(amount, currency)} flat"
    return "Free"


def code_scope_text(code: dict[str, Any], catalog: Catalog) -> str:
    product_id = code.get("applies_to_product_id")
    if not product_id:
        return "Any"
    tiers = [catalog.policy_name(pid) for pid in code.get("applies_to_policy_ids") or []]
    name = catalog.product_name(product_id)
    return f"{name}: {', '.join(tiers)}" if tiers else f"{name}, any tier"


def amount_in_units(amount: int, kind: str, currency: str) -> str:
    """A stored amount as the form shows it: a percentage, or normal currency units."""
    if kind == "percent":
        return percent_text(amount)
    if kind == "free_license":
        return ""
    if currency == "SAT":
        return str(amount)
    whole, cents = divmod(amount, 100)
    return str(whole) if cents == 0 else f"{whole}.{cents:02d}"


class AmountError(ValueError):
    """An amount the form cannot turn into the API's integer; the text says why."""


def amount_from_units(text: str, kind: str, currency: str) -> int:
    """What the operator typed, in the API's unit: basis points for a percentage, the
    currency's smallest unit otherwise (web.md 11.5.8)."""
    if kind == "free_license":
        return 0
    clean = text.replace(",", "").replace(" ", "").removesuffix("%")
    if not clean:
        raise AmountError("Enter an amount.")
    try:
        value = Decimal(clean)
    except InvalidOperation:
        raise AmountError("Enter the amount as a number, for example 12.5.") from None
    if not value.is_finite() or value < 0:
        raise AmountError("Enter a positive number.")
    if kind == "percent":
        if value > 100:
            raise AmountError("A percentage is at most 100.")
        return _scaled(value, 100, "A percentage has at most two decimals.")
    if value == 0:
        raise AmountError("Enter an amount above zero.")
    if currency == "SAT":
        return _scaled(value, 1, "Sats are whole numbers.")
    return _scaled(value, 100, f"{currency} amounts have at most two decimals.")


def _scaled(value: Decimal, factor: int, message: str) -> int:
    scaled = value * factor
    if scaled != scaled.to_integral_value():
        raise AmountError(message)
    return int(scaled)


def expiry_from_form(utc_value: str | None, typed: str | None) -> str | None:
    """The browser's converted UTC time when the script ran; without it the typed value,
    which the form labels as UTC (web.md 2.5)."""
    if utc_value:
        return utc_value
    if not typed:
        return None
    return typed + (":00" if len(typed) == 16 else "") + "+00:00"


def utc_input_value(value: str | None) -> str:
    """A stored time as a datetime-local value in UTC; the script shows it in local time."""
    at = parse_ts(value)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if at else ""


def tier_choices(catalog: Catalog) -> list[dict[str, Any]]:
    """Every product's live tiers, as the create form's toggle pills."""
    choices = []
    for product in catalog.products:
        for policy in sorted(catalog.policies_of(product["id"]), key=lambda p: p["name"]):
            if policy.get("archived_at"):
                continue
            choices.append(
                {
                    "product_slug": product["slug"],
                    "product_name": product["name"],
                    "slug": policy["slug"],
                    "name": policy["name"],
                    "value": f"{product['slug']}/{policy['slug']}",
                }
            )
    return choices


def chosen_tiers(values: Iterable[str], product_slug: str | None) -> tuple[list[str], list[str]]:
    """The picked tier slugs of the chosen product, and the picks of other products."""
    mine: list[str] = []
    others: list[str] = []
    for value in values:
        product, _, policy = value.partition("/")
        (mine if product_slug and product == product_slug else others).append(policy or value)
    return mine, others
