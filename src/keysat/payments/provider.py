"""The provider protocol every payment provider implements (payments.md 2).

The rest of the server (purchase, settlement, reconcile) talks only to this interface.
Inbound events are hints: the only source of truth for an invoice's state is
`get_invoice_status`, read from the provider that created the invoice.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

KINDS = ("sandbox", "btcpay", "zaprite")
RAILS = ("lightning", "onchain", "card")
SERVED_RAILS: Mapping[str, tuple[str, ...]] = {
    "sandbox": ("lightning", "onchain", "card"),
    "btcpay": ("lightning", "onchain"),
    "zaprite": ("card", "lightning", "onchain"),
}
TEST_NETWORKS = frozenset({"testnet", "signet", "regtest"})


def parse_rail(text: str | None) -> str | None:
    """A rail from buyer input; anything unrecognised means "no rail given"."""
    if text is None:
        return None
    lowered = text.strip().lower()
    if lowered in ("on-chain", "on_chain"):
        return "onchain"
    return lowered if lowered in RAILS else None


@dataclass(frozen=True)
class Money:
    """An amount in a currency's smallest unit: sats for SAT/BTC, cents for USD/EUR."""

    currency: str
    amount: int


class SnapshotStatus(enum.Enum):
    PENDING = "Pending"
    SETTLED = "Settled"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    REFUNDED = "Refunded"


@dataclass(frozen=True)
class Snapshot:
    """What the provider says about an invoice now. `amount` None means "no opinion";
    `external_order_id` is our invoice id as the provider recorded it, when it tells."""

    status: SnapshotStatus
    amount: Money | None
    external_order_id: str | None = None


@dataclass(frozen=True)
class InvoiceRequest:
    amount: Money
    external_order_id: str
    redirect_url: str
    metadata: dict[str, Any]
    buyer_email: str | None = None
    allow_save_payment_profile: bool = False
    expires_at: datetime | None = None


@dataclass(frozen=True)
class CreatedInvoice:
    provider_invoice_id: str
    checkout_url: str


class Provider(Protocol):
    """One connected payment account, or the built-in sandbox."""

    @property
    def kind(self) -> str: ...

    @property
    def provider_id(self) -> str | None:
        """The `payment_providers` row id; None for the sandbox."""

    async def create_invoice(self, request: InvoiceRequest) -> CreatedInvoice: ...

    async def get_invoice_status(self, provider_invoice_id: str) -> Snapshot: ...
