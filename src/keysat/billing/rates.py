"""Exchange rates (payments.md 6): identity, manual pins, a per-process cache, then the
configured sources in order. Fiat prices become sats with `pricing.fiat_to_sats`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.billing.pricing import (
    SAT_CURRENCIES,
    SATS_PER_BTC,
    fiat_to_sats,
    parse_decimal,
    round_half_up,
)
from keysat.billing.pricing import rate_centibps as centibps_of
from keysat.db import Database
from keysat.operator.models import Setting
from keysat.operator.service import delete_setting, get_setting, put_setting
from keysat.outbound import UpstreamError, call_json
from keysat.settings import Settings

RATE_TIMEOUT_SECONDS = 8.0
PIN_PREFIX = "manual_rate_pin_"
KRAKEN_PAIRS = {"USD": "XXBTZUSD", "EUR": "XXBTZEUR"}


class RateError(Exception):
    """Every source failed: `rate fetch failed: <source>: <error>; ...`."""


@dataclass(frozen=True)
class Rate:
    currency: str
    units_per_btc: Decimal
    source: str
    fetched_at: float

    @property
    def centibps(self) -> int:
        return centibps_of(self.units_per_btc)

    def age_seconds(self) -> int:
        return int(time.monotonic() - self.fetched_at)


@dataclass(frozen=True)
class Quote:
    """A listed price turned into sats, with what an invoice records about the rate."""

    sats: int
    listed_currency: str | None
    listed_value: int | None
    rate_centibps: int | None
    source: str


def _unit(currency: str) -> str:
    code = currency.upper()
    return "SAT" if code in SAT_CURRENCIES else code


def pin_key(currency: str) -> str:
    return PIN_PREFIX + currency


def parse_units_per_btc(value: Any) -> Decimal | None:
    """A pin value: a positive decimal string or JSON number. A value so small that it rounds
    to 0 in the invoice encoding (below 0.00005) is as unusable as 0: nothing converts at it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        number: Decimal | None = Decimal(value)
    elif isinstance(value, float):
        number = parse_decimal(repr(value))
    elif isinstance(value, str):
        number = parse_decimal(value)
    else:
        return None
    return number if number is not None and number > 0 and centibps_of(number) > 0 else None


class RateService:
    def __init__(self, db: Database, settings: Settings, http: httpx.AsyncClient) -> None:
        self._db = db
        self._settings = settings
        self._http = http
        self._cache: dict[str, Rate] = {}

    async def lookup(self, currency: str) -> Rate:
        code = currency.upper()
        if code in SAT_CURRENCIES:
            return Rate(code, Decimal(SATS_PER_BTC), "identity", time.monotonic())
        pinned = await self._pin(code)
        if pinned is not None:
            return pinned
        cached = self._cache.get(code)
        if cached is not None and time.monotonic() - cached.fetched_at < self._ttl:
            return cached
        failures: list[str] = []
        for source in self._settings.rate_sources:
            try:
                units = await self._fetch(source, code)
            except UpstreamError as exc:
                failures.append(f"{source}: {exc}")
                continue
            if units is None:
                continue
            rate = Rate(code, units, source, time.monotonic())
            self._cache[code] = rate
            return rate
        if not failures:
            failures.append(f"no rate source serves {code}")
        raise RateError("rate fetch failed: " + "; ".join(failures))

    async def refresh(self, currency: str) -> Rate:
        self._cache.pop(currency.upper(), None)
        return await self.lookup(currency)

    async def quote(self, currency: str, value: int) -> Quote:
        """What a listed price costs in sats now (payments.md 6.2, 6.3)."""
        code = currency.upper()
        if code in SAT_CURRENCIES:
            return Quote(value, None, None, None, "identity")
        rate = await self.lookup(code)
        return Quote(
            sats=fiat_to_sats(value, rate.centibps),
            listed_currency=code,
            listed_value=value,
            rate_centibps=rate.centibps,
            source=rate.source,
        )

    async def convert(self, value: int, source: str, target: str) -> int:
        """An amount in one currency's smallest unit, in another's, through BTC."""
        source, target = _unit(source), _unit(target)
        if source == target:
            return value
        sats = (await self.quote(source, value)).sats
        if target == "SAT":
            return sats
        rate = await self.lookup(target)
        return round_half_up(Decimal(sats) * rate.centibps / 10**10)

    async def set_pin(self, session: AsyncSession, currency: str, units: Decimal) -> None:
        await put_setting(session, pin_key(currency), format(units, "f"))
        self._cache.pop(currency, None)

    async def clear_pin(self, session: AsyncSession, currency: str) -> None:
        await delete_setting(session, pin_key(currency))
        self._cache.pop(currency, None)

    def cached(self) -> list[Rate]:
        return list(self._cache.values())

    async def pins(self, session: AsyncSession) -> list[Rate]:
        rows = (
            await session.execute(sa.select(Setting).where(Setting.key.startswith(PIN_PREFIX)))
        ).scalars()
        pinned = []
        for row in rows:
            units = parse_units_per_btc(row.value or "")
            if units is not None:
                pinned.append(
                    Rate(row.key[len(PIN_PREFIX) :], units, "manual_pin", time.monotonic())
                )
        return pinned

    @property
    def _ttl(self) -> int:
        return self._settings.rate_cache_ttl_seconds

    async def _pin(self, currency: str) -> Rate | None:
        async with self._db.read() as session:
            stored = await get_setting(session, pin_key(currency))
        units = parse_units_per_btc(stored) if stored is not None else None
        return Rate(currency, units, "manual_pin", time.monotonic()) if units else None

    async def _fetch(self, source: str, currency: str) -> Decimal | None:
        """Units per BTC from one source; None when the source does not serve `currency`."""
        settings = self._settings
        if source == "kraken":
            pair = KRAKEN_PAIRS.get(currency)
            if pair is None:
                return None
            data = await self._get(f"{settings.kraken_url}/0/public/Ticker?pair={pair}", source)
            errors = data.get("error") if isinstance(data, dict) else None
            if errors:
                raise UpstreamError(f"error {errors}")
            value = _path(data, "result", pair, "c", 0)
        elif source == "coinbase":
            data = await self._get(
                f"{settings.coinbase_url}/v2/exchange-rates?currency=BTC", source
            )
            value = _path(data, "data", "rates", currency)
        else:
            lowered = currency.lower()
            url = (
                f"{settings.coingecko_url}/api/v3/simple/price?ids=bitcoin&vs_currencies={lowered}"
            )
            value = _path(await self._get(url, source), "bitcoin", lowered)
        units = parse_units_per_btc(value)
        if units is None:
            raise UpstreamError("no usable price in the answer")
        return units

    async def _get(self, url: str, source: str) -> Any:
        return await call_json(
            self._http,
            "GET",
            url,
            what=f"{source} ticker",
            headers={},
            timeout_seconds=RATE_TIMEOUT_SECONDS,
            decimals=True,
        )


def _path(data: Any, *keys: str | int) -> Any:
    for key in keys:
        if isinstance(key, int):
            if not isinstance(data, list) or len(data) <= key:
                return None
        elif not isinstance(data, dict):
            return None
        data = data[key] if isinstance(key, int) else data.get(key)
    return data
