"""Provider rules: building a provider from its row, choosing one for a purchase
(payments.md 2.5), and which providers may take money in sandbox mode."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.billing.models import Invoice
from keysat.db import Database
from keysat.errors import ApiError, bad_request
from keysat.operator.models import MerchantProfile
from keysat.payments.btcpay import BTCPayClient, BTCPayProvider, detect_network, is_test_network
from keysat.payments.models import PaymentProvider, RailPreference
from keysat.payments.provider import SERVED_RAILS, Provider
from keysat.payments.sandbox import SandboxProvider
from keysat.payments.zaprite import ZapriteProvider
from keysat.settings import Settings

log = logging.getLogger(__name__)


def no_provider_configured(detail: str) -> ApiError:
    return ApiError(503, "btcpay_not_configured", f"payment provider not configured: {detail}")


@dataclass(frozen=True)
class ProviderChoice:
    provider: Provider
    rail: str | None


class Providers:
    """Builds provider objects on demand from their rows; holds the built-in sandbox."""

    def __init__(self, db: Database, settings: Settings, http: httpx.AsyncClient) -> None:
        self._db = db
        self._settings = settings
        self.http = http
        self.sandbox = SandboxProvider(db, settings.public_url) if settings.sandbox_mode else None

    def build(self, row: PaymentProvider) -> Provider:
        if row.kind == "btcpay":
            return BTCPayProvider(row, self.http, self._settings.btcpay.checkout_base)
        return ZapriteProvider(row, self.http)

    def btcpay_client(self, row: PaymentProvider) -> BTCPayClient:
        return BTCPayClient(self.http, row.base_url, row.api_key)

    async def for_invoice(self, session: AsyncSession, invoice: Invoice) -> Provider | None:
        """The provider that created an invoice; None when it is gone (or the sandbox is off)."""
        if invoice.provider_kind == "sandbox":
            return self.sandbox
        if invoice.payment_provider_id is None:
            return None
        row = await session.get(PaymentProvider, invoice.payment_provider_id)
        if row is None or row.kind != invoice.provider_kind:
            return None
        return self.build(row)

    async def eligible(self, rows: Sequence[PaymentProvider]) -> list[PaymentProvider]:
        """The rows that may take money now. In sandbox mode no real money moves: only
        BTCPay stores on a test network, probed again while their network is unknown."""
        if not self._settings.sandbox_mode:
            return list(rows)
        usable = []
        for row in rows:
            if row.kind != "btcpay" or not row.store_id:
                continue
            network = row.network
            if network in (None, "unknown"):
                network = await detect_network(self.btcpay_client(row), row.store_id)
                await self._record_network(row.id, network)
            if is_test_network(network):
                usable.append(row)
        return usable

    async def _record_network(self, provider_id: str, network: str) -> None:
        async with self._db.write() as session:
            await session.execute(
                sa.update(PaymentProvider)
                .where(PaymentProvider.id == provider_id)
                .values(network=network)
            )

    async def choose(self, profile: MerchantProfile, requested_rail: str | None) -> ProviderChoice:
        """payments.md 2.5: the profile's provider for the buyer's rail."""
        async with self._db.read() as session:
            rows = await providers_of(session, profile.id)
            preferences = await rail_preferences(session, profile.id)
        eligible = await self.eligible(rows)
        if not eligible:
            if self.sandbox is not None:
                return ProviderChoice(provider=self.sandbox, rail=requested_rail)
            raise no_provider_configured(
                f"merchant profile '{profile.name}' has no payment providers connected — "
                "buyers can't pay yet. Connect one in the admin UI."
            )
        rail = requested_rail or SERVED_RAILS[eligible[0].kind][0]
        by_id = {row.id: row for row in eligible}
        preferred = by_id.get(preferences.get(rail, ""))
        if preferred is not None:
            return ProviderChoice(provider=self.build(preferred), rail=rail)
        serving = [row for row in eligible if rail in SERVED_RAILS[row.kind]]
        if not serving:
            raise bad_request(
                f"no payment provider on merchant profile '{profile.name}' serves the '{rail}' rail"
            )
        if len(serving) > 1:
            log.warning(
                "merchant profile %s has several providers for the %s rail; using the "
                "earliest connected (set a rail preference to choose)",
                profile.id,
                rail,
            )
        return ProviderChoice(provider=self.build(serving[0]), rail=rail)


async def providers_of(session: AsyncSession, profile_id: str) -> list[PaymentProvider]:
    """A profile's providers, earliest connected first (the first is its default)."""
    query = (
        sa.select(PaymentProvider)
        .where(PaymentProvider.merchant_profile_id == profile_id)
        .order_by(PaymentProvider.connected_at, PaymentProvider.id)
    )
    return list((await session.execute(query)).scalars())


async def rail_preferences(session: AsyncSession, profile_id: str) -> dict[str, str]:
    query = sa.select(RailPreference).where(RailPreference.merchant_profile_id == profile_id)
    return {row.rail: row.payment_provider_id for row in (await session.execute(query)).scalars()}
