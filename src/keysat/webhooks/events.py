"""The sixteen event names the server emits (webhooks.md 3), each with the one line that
says when it fires. The admin UI's event picker lists exactly these; a test holds every
`record_event` call in the code to this list."""

from __future__ import annotations

EVENT_TYPES: tuple[tuple[str, str], ...] = (
    ("product.created", "An admin created a product."),
    ("license.issued", "A license was issued: a purchase, a free or trial tier, or by hand."),
    ("license.revoked", "An admin revoked a license."),
    ("license.suspended", "An admin suspended a license."),
    ("license.unsuspended", "An admin lifted a suspension."),
    ("license.tier_changed", "A license moved to another tier."),
    ("machine.activated", "A new machine was activated on a license."),
    ("machine.deactivated", "A machine was deactivated, by its client or an admin."),
    ("code.redeemed", "A discount code was redeemed."),
    ("subscription.renewal_pending", "A renewal invoice is waiting for the buyer to pay."),
    ("subscription.renewal_skipped", "A renewal was skipped: its tier is archived."),
    ("subscription.auto_charge_initiated", "A renewal was charged to a saved card."),
    ("subscription.auto_charge_failed", "Charging a saved card failed."),
    ("subscription.renewed", "A renewal was paid and the license extended."),
    ("subscription.lapsed", "A subscription passed its grace period unpaid."),
    ("subscription.cancelled", "A subscription was cancelled."),
)
EVENT_NAMES = frozenset(name for name, _ in EVENT_TYPES)
