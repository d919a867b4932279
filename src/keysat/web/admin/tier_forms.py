"""The tier form and tier cards of the Policies screen (web.md 11.5.3), as plain functions:
form values to admin API bodies and back, metadata kept across edits, the upgrade-ladder
order, and the card a buyer would see with the admin's extra details."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from keysat.web.admin.catalog_forms import FieldError, amount_text, check_slug, parse_amount
from keysat.web.admin.shell import Form
from keysat.web.views import TierCard, tier_card

DAY = 86_400
DURATIONS = (
    ("0", "Perpetual"),
    ("7", "7 days"),
    ("30", "30 days"),
    ("90", "90 days"),
    ("365", "1 year"),
    ("730", "2 years"),
    ("custom", "Custom (days)"),
)
CADENCES = (
    ("7", "Weekly (7 days)"),
    ("30", "Monthly (30 days)"),
    ("90", "Quarterly (90 days)"),
    ("180", "Semi-annual (180 days)"),
    ("365", "Annual (365 days)"),
    ("custom", "Custom (days)"),
)
KNOWN_METADATA = (
    "description",
    "highlight",
    "marketing_bullets",
    "marketing_bullets_position",
    "hidden_entitlements",
)


def ladder_order(policies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Upgrade-ladder order: rank ascending, then unranked tiers, oldest first."""
    return sorted(
        policies,
        key=lambda p: (p["tier_rank"] is None, p["tier_rank"] or 0, p["created_at"]),
    )


def moved(ids: Sequence[str], tier_id: str, direction: str) -> list[str]:
    """The ladder after moving one tier a step up (towards the top rank) or down."""
    order = list(ids)
    index = order.index(tier_id)
    target = index + 1 if direction == "up" else index - 1
    if 0 <= target < len(order):
        order[index], order[target] = order[target], order[index]
    return order


def rank_changes(
    policies: Sequence[Mapping[str, Any]], order: Sequence[str]
) -> list[tuple[str, int]]:
    """The (id, rank) patches that number the ladder 1…N in `order`."""
    ranks = {p["id"]: p["tier_rank"] for p in policies}
    return [
        (tier_id, position)
        for position, tier_id in enumerate(order, start=1)
        if ranks.get(tier_id) != position
    ]


def _whole(text: str, field: str, *, low: int = 0, high: int | None = None) -> int:
    try:
        value = int(text.strip().replace(",", ""))
    except ValueError:
        raise FieldError(field, "Enter a whole number.") from None
    if value < low or (high is not None and value > high):
        bound = f" to {high:,}" if high is not None else " or more"
        raise FieldError(field, f"Enter a whole number from {low}{bound}.")
    return value


def _days_choice(form: Form, name: str, field: str, high: int | None = None) -> int:
    choice = form.text(name)
    if choice == "custom":
        return _whole(form.get(f"{name}_custom"), field, low=1, high=high)
    return _whole(choice or "0", field, high=high)


def tip_bps(text: str) -> int:
    """A revenue-share percentage ("2.5") in basis points (250)."""
    if not text.strip():
        return 0
    try:
        value = Decimal(text.strip().rstrip("%"))
    except InvalidOperation:
        raise FieldError("tip_pct", "Enter a percentage, for example 2.5.") from None
    bps = value * 100
    if not value.is_finite() or bps != bps.to_integral_value() or not 0 <= bps <= 10_000:
        raise FieldError("tip_pct", "Enter a percentage from 0 to 100 with at most two decimals.")
    return int(bps)


def tier_body(
    form: Form,
    product: Mapping[str, Any],
    *,
    metadata: Mapping[str, Any] | None = None,
    create: bool,
) -> dict[str, Any]:
    """The admin API body of the tier form. Metadata keys the form does not know are kept."""
    currency = product["price_currency"]
    catalog = product.get("entitlements_catalog")
    if catalog:
        entitlements = [slug for slug in form.all("ent") if slug]
    else:
        raw = form.get("entitlements_text").replace("\n", ",")
        entitlements = [item.strip() for item in raw.split(",") if item.strip()]
    hidden = [slug for slug in form.all("hide_ent") if slug in entitlements]
    price = form.text("price")
    recurring = form.flag("is_recurring")
    rank = form.text("tier_rank")
    kept = {k: v for k, v in (metadata or {}).items() if k not in KNOWN_METADATA}
    bullets = [line.strip() for line in form.get("bullets").splitlines() if line.strip()]
    description = form.get("description").strip()
    extra: dict[str, Any] = {}
    if description:
        extra["description"] = description
    if form.flag("highlight"):
        extra["highlight"] = True
    if bullets:
        extra["marketing_bullets"] = bullets
        extra["marketing_bullets_position"] = (
            "below" if form.text("bullets_position") == "below" else "above"
        )
    if hidden:
        extra["hidden_entitlements"] = hidden
    body: dict[str, Any] = {
        "name": form.text("name"),
        "price_sats_override": parse_amount(price, currency) if price else None,
        "max_machines": _whole(form.get("max_machines") or "1", "max_machines"),
        "entitlements": entitlements,
        "metadata": {**kept, **extra},
        "is_trial": form.flag("is_trial"),
        "tier_rank": _whole(rank, "tier_rank", high=1000) if rank else None,
        "is_recurring": recurring,
        "allow_repeat_trials": not form.flag("one_trial"),
    }
    if recurring:
        period = _days_choice(form, "renewal", "renewal", high=1830)
        if period < 1:
            raise FieldError("renewal", "Choose how often the subscription renews.")
        trial = _whole(form.get("trial_days") or "0", "trial_days", high=period)
        body.update(
            renewal_period_days=period,
            grace_period_days=_whole(form.get("grace_period_days") or "7", "grace", high=90),
            trial_days=trial,
            duration_seconds=period * DAY,
            grace_seconds=0,
        )
    else:
        body.update(
            duration_seconds=_days_choice(form, "duration", "duration") * DAY,
            grace_seconds=_whole(form.get("grace_days") or "0", "grace_days") * DAY,
        )
    if create:
        body["slug"] = form.text("slug")
        check_slug(body["slug"])
        body["product_slug"] = product["slug"]
        body.update(tip_fields(form))
    return body


def tip_fields(form: Form) -> dict[str, Any]:
    return {
        "tip_recipient": form.optional("tip_recipient"),
        "tip_pct_bps": tip_bps(form.get("tip_pct")),
        "tip_label": form.optional("tip_label"),
    }


def _choice(days: int, options: Sequence[tuple[str, str]]) -> tuple[str, str]:
    known = {value for value, _ in options}
    return (str(days), "") if str(days) in known else ("custom", str(days))


def tier_values(policy: Mapping[str, Any] | None, product: Mapping[str, Any]) -> dict[str, Any]:
    """What the form shows for a stored tier, or the defaults of a new one."""
    if policy is None:
        return {
            "name": "",
            "slug": "",
            "description": "",
            "price": "",
            "duration": "0",
            "duration_custom": "",
            "grace_days": "0",
            "max_machines": "1",
            "ent": [],
            "hide_ent": [],
            "entitlements_text": "",
            "highlight": False,
            "bullets": "",
            "bullets_position": "above",
            "is_trial": False,
            "tier_rank": "",
            "public": True,
            "is_recurring": False,
            "renewal": "30",
            "renewal_custom": "",
            "grace_period_days": "7",
            "trial_days": "0",
            "one_trial": True,
            "tip_recipient": "",
            "tip_pct": "",
            "tip_label": "",
        }
    meta = policy["metadata"]
    duration, duration_custom = _choice(policy["duration_seconds"] // DAY, DURATIONS)
    renewal, renewal_custom = _choice(policy["renewal_period_days"] or 30, CADENCES)
    bps = policy["tip_pct_bps"]
    return {
        "name": policy["name"],
        "slug": policy["slug"],
        "description": meta.get("description") or "",
        "price": amount_text(policy["price_sats_override"], product["price_currency"]),
        "duration": duration,
        "duration_custom": duration_custom,
        "grace_days": str(policy["grace_seconds"] // DAY),
        "max_machines": str(policy["max_machines"]),
        "ent": list(policy["entitlements"]),
        "hide_ent": list(meta.get("hidden_entitlements") or []),
        "entitlements_text": ", ".join(policy["entitlements"]),
        "highlight": bool(meta.get("highlight")),
        "bullets": "\n".join(meta.get("marketing_bullets") or []),
        "bullets_position": "below"
        if meta.get("marketing_bullets_position") == "below"
        else "above",
        "is_trial": policy["is_trial"],
        "tier_rank": "" if policy["tier_rank"] is None else str(policy["tier_rank"]),
        "public": policy["public"],
        "is_recurring": policy["is_recurring"],
        "renewal": renewal,
        "renewal_custom": renewal_custom,
        "grace_period_days": str(policy["grace_period_days"]),
        "trial_days": str(policy["trial_days"]),
        "one_trial": not policy["allow_repeat_trials"],
        "tip_recipient": policy["tip_recipient"] or "",
        "tip_pct": "" if not bps else str(Decimal(bps) / 100).rstrip("0").rstrip("."),
        "tip_label": policy["tip_label"] or "",
    }


def echoed_tier(form: Form) -> dict[str, Any]:
    """What the operator typed, for a form that came back refused."""
    values: dict[str, Any] = {name: form.get(name) for name in tier_values(None, {})}
    for name in ("highlight", "is_trial", "public", "is_recurring", "one_trial"):
        values[name] = form.flag(name)
    values["ent"] = form.all("ent")
    values["hide_ent"] = form.all("hide_ent")
    return values


def admin_card(
    index: int, policy: Mapping[str, Any], product: Mapping[str, Any]
) -> tuple[TierCard, list[dict[str, Any]]]:
    """The buyer's card for this tier, and every entitlement it grants, hidden ones marked."""
    meta = policy["metadata"]
    price = policy["price_sats_override"]
    hidden = [e for e in meta.get("hidden_entitlements") or [] if isinstance(e, str)]
    bullets = [b for b in meta.get("marketing_bullets") or [] if isinstance(b, str)]
    public_tier = {
        **policy,
        "price_currency": product["price_currency"],
        "price_sats": product["price_value"] if price is None else price,
        "description": meta.get("description") if isinstance(meta.get("description"), str) else "",
        "hidden_entitlements": hidden,
        "marketing_bullets": bullets,
        "marketing_bullets_position": meta.get("marketing_bullets_position"),
        "featured_discount": None,
    }
    catalog = {entry["slug"]: entry for entry in product.get("entitlements_catalog") or []}
    card = tier_card(
        index,
        public_tier,
        catalog,
        highlighted=bool(meta.get("highlight")),
        trial_once=not policy["allow_repeat_trials"],
    )
    features = [{"text": text, "hidden": False} for text in bullets]
    granted = [
        {
            "text": (catalog[slug]["name"] if slug in catalog else "") or slug,
            "hidden": slug in hidden,
        }
        for slug in policy["entitlements"]
    ]
    below = meta.get("marketing_bullets_position") == "below"
    return card, (granted + features if below else features + granted)
