"""Plain helpers of the Licenses and Machines screens (web.md 11.5.4, 11.5.5): filtering,
counting, labels and form reading. Nothing here calls the API; the screens pass it what
they read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from keysat.web.admin.shell import Form

PAGE_SIZE = 100
EXPIRING_WINDOW = timedelta(days=30)
SEARCH_FIELDS = (
    ("email", "E-mail"),
    ("invoice", "Invoice id"),
    ("license", "License id"),
    ("npub", "Nostr npub"),
)
SEARCH_PARAMS = {"email": "buyer_email", "invoice": "invoice_id", "npub": "nostr_npub"}
STATUS_FILTERS = (
    ("all", "All"),
    ("active", "Active"),
    ("suspended", "Suspended"),
    ("revoked", "Revoked"),
    ("expiring", "Expiring within 30 days"),
)
MACHINE_FILTERS = (("active", "Active"), ("deactivated", "Deactivated"), ("all", "All"))
SOURCES = {
    "admin_issue": "Issued by hand",
    "purchase": "Purchase",
}
STATUS_TONES = {"active": "ok", "suspended": "warn", "revoked": "bad"}


def parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def is_expiring(license_row: dict[str, Any], now: datetime) -> bool:
    """Not revoked, with an expiry from now to 30 days ahead."""
    expires = parse_ts(license_row.get("expires_at"))
    if license_row.get("status") == "revoked" or expires is None:
        return False
    return now <= expires <= now + EXPIRING_WINDOW


def matches_status(license_row: dict[str, Any], status: str, now: datetime) -> bool:
    if status == "expiring":
        return is_expiring(license_row, now)
    return status == "all" or license_row.get("status") == status


def newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: str(row.get("issued_at") or ""), reverse=True)


def one_of(value: str | None, choices: tuple[tuple[str, str], ...], default: str) -> str:
    return value if value in {key for key, _ in choices} else default


def page_offset(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


def active_devices(machines: list[dict[str, Any]]) -> Counter[str]:
    return Counter(row["license_id"] for row in machines if row.get("active"))


def devices_text(active: int, max_machines: int) -> str:
    return f"{active} / {'∞' if max_machines == 0 else max_machines}"


def entitlement_names(slugs: list[str], product: dict[str, Any] | None) -> list[str]:
    """Catalog display names where the product has a catalog, else the slugs themselves."""
    catalog = {
        entry["slug"]: entry.get("name") or entry["slug"]
        for entry in (product or {}).get("entitlements_catalog") or []
    }
    return [catalog.get(slug, slug) for slug in slugs]


def tier_label(policy: dict[str, Any]) -> str:
    """A change-tier option: the name with its rank, "recurring" and "trial" (web.md 11.5.4)."""
    notes = []
    if policy.get("tier_rank") is not None:
        notes.append(f"rank {policy['tier_rank']}")
    if policy.get("is_recurring"):
        notes.append("recurring")
    if policy.get("is_trial") or policy.get("trial_days"):
        notes.append("trial")
    if not policy.get("active", True):
        notes.append("inactive")
    return f"{policy['name']} ({', '.join(notes)})" if notes else str(policy["name"])


def listed_price(policy: dict[str, Any], product: dict[str, Any]) -> int:
    override = policy.get("price_sats_override")
    return int(override) if override is not None else int(product.get("price_value") or 0)


def is_downgrade(
    current: dict[str, Any] | None, target: dict[str, Any], product: dict[str, Any]
) -> bool:
    """The server's admin-mode direction (admin-api.md 5.9): by rank when both have one and
    they differ, else by listed price, a tie being an upgrade."""
    if current is None:
        return False
    ranks = (current.get("tier_rank"), target.get("tier_rank"))
    if None not in ranks and ranks[0] != ranks[1]:
        return int(target["tier_rank"]) < int(current["tier_rank"])
    return listed_price(target, product) < listed_price(current, product)


def lost_entitlements(
    license_row: dict[str, Any], target: dict[str, Any], product: dict[str, Any]
) -> list[str]:
    kept = set(target.get("entitlements") or [])
    lost = [slug for slug in license_row.get("entitlements") or [] if slug not in kept]
    return entitlement_names(lost, product)


def top_platform(machines: list[dict[str, Any]]) -> str | None:
    platforms = Counter(row["platform"] for row in machines if row.get("platform"))
    return platforms.most_common(1)[0][0] if platforms else None


def metadata_lines(metadata: Any) -> list[tuple[str, str]]:
    """License metadata as label and text pairs, so the page never shows raw JSON."""
    if not isinstance(metadata, dict):
        return []
    lines = []
    for key, value in metadata.items():
        if value is None or value == "":
            continue
        if isinstance(value, list):
            text = ", ".join(str(item) for item in value)
        elif isinstance(value, dict):
            text = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif key == "source":
            text = SOURCES.get(str(value), str(value))
        else:
            text = str(value)
        lines.append((key.replace("_", " ").capitalize(), text))
    return lines


@dataclass(frozen=True)
class IssueRequest:
    """The manual-issue form read into the API's body, or the field errors to show."""

    body: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)


def _whole(form: Form, name: str, errors: dict[str, str]) -> int | None:
    text = form.text(name)
    if not text:
        return None
    if not text.isdigit():
        errors[name] = "Enter a whole number, 0 or more."
        return None
    return int(text)


def issue_request(form: Form) -> IssueRequest:
    """Only the fields the operator filled are sent, since an explicit field wins over the
    tier's own value (admin-api.md 5.5)."""
    errors: dict[str, str] = {}
    product = form.text("product_slug")
    body: dict[str, Any] = {"product_slug": product}
    if not product:
        errors["product_slug"] = "Choose a product."
    tier = form.text("tier")
    if tier:
        tier_product, _, policy = tier.partition("/")
        if tier_product != product:
            errors["tier"] = "That tier belongs to another product. Choose one of this product."
        else:
            body["policy_slug"] = policy
    for name in ("buyer_email", "note", "nostr_npub"):
        value = form.optional(name)
        if value is not None:
            body[name] = value
    expires = form.text("expires_on")
    if expires:
        try:
            day = datetime.strptime(expires, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            errors["expires_on"] = "Enter a date as YYYY-MM-DD."
        else:
            body["expires_at"] = day.isoformat()
    entitlements = [item.strip() for item in form.get("entitlements").split(",")]
    if any(entitlements):
        body["entitlements"] = [item for item in entitlements if item]
    devices = _whole(form, "max_machines", errors)
    if devices is not None:
        body["max_machines"] = devices
    grace = _whole(form, "grace_days", errors)
    if grace is not None:
        body["grace_seconds"] = grace * 86400
    trial = form.text("is_trial")
    if trial in ("yes", "no"):
        body["is_trial"] = trial == "yes"
    return IssueRequest(body, errors)
