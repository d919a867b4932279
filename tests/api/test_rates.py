"""Exchange rates through purchases and the admin surface: the worked conversion examples
(billing.md 2.2, 12.1), pins, the per-process cache and the ordered sources against fake
Kraken, Coinbase and CoinGecko (payments.md 6, 7.3), and the rates admin calls
(admin-api.md 17)."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from fakes.rates import FakeRates
from keysat.billing.models import Invoice
from keysat.catalog.models import Product
from keysat.clock import now
from keysat.operator.models import Setting
from support import (
    ADMIN,
    assert_error,
    audit_rows,
    create_policy,
    create_product,
    invoice_row,
    purchase,
)

SOURCES = ("kraken", "coinbase", "coingecko")
KRAKEN_FAILURES = (
    "http_500",
    "kraken_error",
    "malformed_json",
    "missing_value",
    "zero",
    "unparseable",
)
OTHER_FAILURES = ("http_500", "malformed_json", "missing_value", "zero", "unparseable")
RATE_FIELDS = {"currency", "units_per_btc", "source", "fetched_at_secs_ago"}


def source_env(fake: FakeRates, sources: str = "kraken,coinbase,coingecko") -> dict[str, str]:
    return {
        "KEYSAT_KRAKEN_URL": fake.url,
        "KEYSAT_COINBASE_URL": fake.url,
        "KEYSAT_COINGECKO_URL": fake.url,
        "KEYSAT_RATE_SOURCES": sources,
    }


def expected_sats(cents: int, units_per_btc: str) -> int:
    """An independent route to the answer: round(cents x 10^6 / units) after rounding the rate
    to four decimals, both half up, in exact decimals (payments.md 6.2)."""
    rate = Decimal(units_per_btc).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    return int((Decimal(cents) * 1_000_000 / rate).to_integral_value(rounding=ROUND_HALF_UP))


@pytest.fixture
async def pinned_only(make_server: Callable[..., Any]) -> Any:
    """Sandbox mode (the sandbox provider takes payments), no rate source: pins only."""
    return await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_SOURCES="none")


@pytest.fixture
async def live(make_server: Callable[..., Any], fake_rates: FakeRates) -> Any:
    """Sandbox mode with the three fake sources in the default order."""
    return await make_server(KEYSAT_SANDBOX_MODE="true", **source_env(fake_rates))


async def usd_product(server: Any, slug: str, cents: int, currency: str = "USD") -> None:
    await create_product(server, slug, price_sats=None, price_currency=currency, price_value=cents)


async def pin(server: Any, currency: str, units: Any) -> Any:
    return await server.client.put(
        f"/v1/admin/rates/pins/{currency}",
        json={"units_per_btc": units},
        headers=ADMIN,
    )


async def put_pin(server: Any, currency: str, units: Any) -> dict[str, Any]:
    response = await pin(server, currency, units)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def write_pin_row(server: Any, currency: str, value: str | None) -> None:
    """A pin written (or removed, for None) straight in the settings table, behind the
    process's back: the admin call would also drop the cache entry."""
    key = f"manual_rate_pin_{currency}"
    async with server.state.db.write() as session:
        await session.execute(sa.delete(Setting).where(Setting.key == key))
        if value is not None:
            session.add(Setting(key=key, value=value, updated_at=now()))


async def pin_row(server: Any, currency: str) -> str | None:
    async with server.state.db.read() as session:
        row = await session.get(Setting, f"manual_rate_pin_{currency}")
    return row.value if row is not None else None


async def buy(server: Any, slug: str) -> Invoice:
    bought = await purchase(server, slug)
    row = await invoice_row(server, bought["invoice_id"])
    assert bought["amount_sats"] == bought["base_price_sats"] == row.amount_sats
    return row


def rate_columns(row: Invoice) -> tuple[Any, ...]:
    return (
        row.amount_sats,
        row.listed_currency,
        row.listed_value,
        row.exchange_rate_centibps,
        row.exchange_rate_source,
    )


def hits(fake: FakeRates) -> tuple[int, int, int]:
    return (fake.hits("kraken"), fake.hits("coinbase"), fake.hits("coingecko"))


async def rates_list(server: Any) -> dict[str, dict[str, Any]]:
    response = await server.admin_get("/v1/admin/rates")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"rates"}
    by_currency: dict[str, dict[str, Any]] = {}
    for entry in body["rates"]:
        assert set(entry) == RATE_FIELDS
        assert isinstance(entry["units_per_btc"], int | float)
        assert not isinstance(entry["units_per_btc"], bool)
        assert type(entry["fetched_at_secs_ago"]) is int and entry["fetched_at_secs_ago"] >= 0
        assert entry["currency"] not in by_currency
        by_currency[entry["currency"]] = entry
    return by_currency


# --- worked examples A1-A9 (billing.md 12.1) ------------------------------------------------


@pytest.mark.parametrize(
    ("case", "cents", "units", "centibps", "sats"),
    [
        ("A1", 2_500, "50000", 500_000_000, 50_000),
        ("A2", 4_900, "50000", 500_000_000, 98_000),
        ("A3", 4_900, "65000", 650_000_000, 75_385),
        ("A4", 5_000, "65000", 650_000_000, 76_923),
        ("A5", 100, "64000", 640_000_000, 1_563),
        ("A6", 1_000, "97123.45678", 971_234_568, 10_296),
        ("A7", 1, "50000", 500_000_000, 20),
        ("A8", 7_500, "50000", 500_000_000, 150_000),
    ],
)
async def test_conversion_examples(
    pinned_only: Any, case: str, cents: int, units: str, centibps: int, sats: int
) -> None:
    assert expected_sats(cents, units) == sats, case
    await usd_product(pinned_only, "acme", cents)
    await put_pin(pinned_only, "USD", units)
    row = await buy(pinned_only, "acme")
    assert rate_columns(row) == (sats, "USD", cents, centibps, "manual_pin")
    assert row.base_price_sats == sats


async def test_a9_sat_product_leaves_the_rate_columns_null(pinned_only: Any) -> None:
    await create_product(pinned_only, "acme", price_sats=50_000)
    await put_pin(pinned_only, "USD", "50000")
    row = await buy(pinned_only, "acme")
    assert rate_columns(row) == (50_000, None, None, None, None)


async def test_a_btc_priced_product_is_sats_not_divided(pinned_only: Any) -> None:
    """Keysat 0.2.0 divided BTC values by 100 (billing.md 2.2)."""
    await create_product(pinned_only, "acme", price_sats=50_000)
    async with pinned_only.state.db.write() as session:
        await session.execute(
            sa.update(Product)
            .where(Product.slug == "acme")
            .values(price_currency="BTC", price_value=50_000)
        )
    row = await buy(pinned_only, "acme")
    assert rate_columns(row) == (50_000, None, None, None, None)


async def test_eur_and_a_fiat_policy_override(pinned_only: Any) -> None:
    await usd_product(pinned_only, "euro", 2_500, currency="EUR")
    await put_pin(pinned_only, "EUR", "65000")
    await put_pin(pinned_only, "USD", "1")
    default = await buy(pinned_only, "euro")
    assert rate_columns(default) == (38_462, "EUR", 2_500, 650_000_000, "manual_pin")
    await create_policy(pinned_only, "euro", "big", price_sats_override=4_900)
    bought = await purchase(pinned_only, "euro", policy_slug="big")
    row = await invoice_row(pinned_only, bought["invoice_id"])
    assert rate_columns(row) == (75_385, "EUR", 4_900, 650_000_000, "manual_pin")


async def test_without_pin_or_source_a_fiat_purchase_is_502(pinned_only: Any) -> None:
    await usd_product(pinned_only, "acme", 2_500)
    await create_product(pinned_only, "sats", price_sats=1_000)
    response = await pinned_only.client.post("/v1/purchase", json={"product": "acme"})
    assert_error(response, 502, "upstream_error")
    assert response.json()["message"].startswith("upstream error: rate fetch failed: ")
    async with pinned_only.state.db.read() as session:
        assert (await session.execute(sa.select(Invoice))).scalars().all() == []
    # SAT products need no rate at all.
    await purchase(pinned_only, "sats")


# --- sources in order (payments.md 6.1) -----------------------------------------------------


async def test_kraken_answers_first(live: Any, fake_rates: FakeRates) -> None:
    fake_rates.set_source_price("kraken", "USD", "50000")
    fake_rates.set_source_price("coinbase", "USD", "40000")
    fake_rates.set_source_price("coingecko", "USD", "25000")
    await usd_product(live, "acme", 2_500)
    row = await buy(live, "acme")
    assert rate_columns(row) == (50_000, "USD", 2_500, 500_000_000, "kraken")
    assert hits(fake_rates) == (1, 0, 0)
    [request] = fake_rates.requests
    assert (request.path, request.query) == ("/0/public/Ticker", "pair=XXBTZUSD")


async def test_kraken_eur_pair_and_the_last_trade_price(live: Any, fake_rates: FakeRates) -> None:
    fake_rates.set_price("EUR", "65000.12345")
    await usd_product(live, "acme", 5_000, currency="EUR")
    row = await buy(live, "acme")
    assert rate_columns(row) == (
        expected_sats(5_000, "65000.12345"),
        "EUR",
        5_000,
        650_001_235,
        "kraken",
    )
    [request] = fake_rates.requests
    assert request.query == "pair=XXBTZEUR"


@pytest.mark.parametrize("mode", KRAKEN_FAILURES)
async def test_kraken_fails_then_coinbase_answers(
    live: Any, fake_rates: FakeRates, mode: Any
) -> None:
    fake_rates.set_source_price("coinbase", "USD", "62500")
    fake_rates.set_source_price("coingecko", "USD", "25000")
    fake_rates.fail("kraken", mode)
    await usd_product(live, "acme", 2_500)
    row = await buy(live, "acme")
    assert rate_columns(row) == (40_000, "USD", 2_500, 625_000_000, "coinbase")
    assert hits(fake_rates) == (1, 1, 0)
    coinbase = [r for r in fake_rates.requests if r.extra["source"] == "coinbase"]
    assert (coinbase[0].path, coinbase[0].query) == ("/v2/exchange-rates", "currency=BTC")


@pytest.mark.parametrize("mode", OTHER_FAILURES)
async def test_kraken_and_coinbase_fail_then_coingecko_as_an_exact_decimal(
    live: Any, fake_rates: FakeRates, mode: Any
) -> None:
    # As a binary float this price rounds to 640 000 001 centibps; exactly it is 640 000 000.
    fake_rates.set_source_price("coingecko", "USD", "64000.000049999999999999")
    fake_rates.fail("kraken", "http_500")
    fake_rates.fail("coinbase", mode)
    await usd_product(live, "acme", 100)
    row = await buy(live, "acme")
    assert rate_columns(row) == (1_563, "USD", 100, 640_000_000, "coingecko")
    assert hits(fake_rates) == (1, 1, 1)
    gecko = [r for r in fake_rates.requests if r.extra["source"] == "coingecko"]
    assert gecko[0].path == "/api/v3/simple/price"
    assert gecko[0].query == "ids=bitcoin&vs_currencies=usd"


async def test_coingecko_half_a_centibp_rounds_up(live: Any, fake_rates: FakeRates) -> None:
    # 97 123.45675 is exactly ...567.5 centibps (half up: 568); a float would give 567.
    fake_rates.set_source_price("coingecko", "USD", "97123.45675")
    fake_rates.fail("kraken", "zero")
    fake_rates.fail("coinbase", "zero")
    await usd_product(live, "acme", 1_000)
    row = await buy(live, "acme")
    assert row.exchange_rate_centibps == 971_234_568
    assert row.exchange_rate_source == "coingecko"


async def test_all_sources_fail_and_no_pin_is_502(live: Any, fake_rates: FakeRates) -> None:
    fake_rates.fail("kraken", "kraken_error")
    fake_rates.fail("coinbase", "http_500")
    fake_rates.fail("coingecko", "malformed_json")
    await usd_product(live, "acme", 2_500)
    response = await live.client.post("/v1/purchase", json={"product": "acme"})
    assert_error(response, 502, "upstream_error")
    message = response.json()["message"]
    prefix = "upstream error: rate fetch failed: "
    assert message.startswith(prefix + "kraken: ")
    parts = message.removeprefix(prefix).split("; ")
    assert [part.split(":")[0] for part in parts] == ["kraken", "coinbase", "coingecko"]
    assert "EQuery:Unknown asset pair" in parts[0]
    assert "500" in parts[1]
    assert hits(fake_rates) == (1, 1, 1)
    async with live.state.db.read() as session:
        assert (await session.execute(sa.select(Invoice))).scalars().all() == []


async def test_configured_order_is_followed(
    make_server: Callable[..., Any], fake_rates: FakeRates
) -> None:
    server = await make_server(
        KEYSAT_SANDBOX_MODE="true", **source_env(fake_rates, "coingecko, kraken")
    )
    fake_rates.set_source_price("coingecko", "USD", "50000")
    await usd_product(server, "acme", 2_500)
    row = await buy(server, "acme")
    assert row.exchange_rate_source == "coingecko"
    assert hits(fake_rates) == (0, 0, 1)


async def test_sources_none_means_only_pins(
    make_server: Callable[..., Any], fake_rates: FakeRates
) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true", **source_env(fake_rates, "none"))
    await usd_product(server, "acme", 2_500)
    response = await server.client.post("/v1/purchase", json={"product": "acme"})
    assert_error(response, 502, "upstream_error")
    refresh = await server.admin_post("/v1/admin/rates/refresh", {"currency": "USD"})
    assert_error(refresh, 502, "upstream_error")
    assert fake_rates.requests == []
    await put_pin(server, "USD", "50000")
    assert rate_columns(await buy(server, "acme"))[-1] == "manual_pin"
    assert fake_rates.requests == []


# --- the cache ----------------------------------------------------------------------------


async def test_a_second_lookup_within_the_ttl_makes_no_request(
    live: Any, fake_rates: FakeRates
) -> None:
    fake_rates.set_price("USD", "50000")
    await usd_product(live, "acme", 2_500)
    first = await buy(live, "acme")
    fake_rates.set_price("USD", "40000")
    second = await buy(live, "acme")
    assert hits(fake_rates) == (1, 0, 0)
    assert (
        rate_columns(second) == rate_columns(first) == (50_000, "USD", 2_500, 500_000_000, "kraken")
    )


async def test_the_ttl_setting_keeps_the_cache(
    make_server: Callable[..., Any], fake_rates: FakeRates
) -> None:
    server = await make_server(
        KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_CACHE_TTL="2h", **source_env(fake_rates)
    )
    assert server.state.settings.rate_cache_ttl_seconds == 7_200
    await usd_product(server, "acme", 2_500)
    for _ in range(3):
        await buy(server, "acme")
    assert hits(fake_rates) == (1, 0, 0)


async def test_refresh_forces_a_refetch_and_updates_the_cache(
    live: Any, fake_rates: FakeRates
) -> None:
    fake_rates.set_price("USD", "50000")
    await usd_product(live, "acme", 2_500)
    await buy(live, "acme")
    fake_rates.set_price("USD", "62500")
    response = await live.admin_post("/v1/admin/rates/refresh", {"currency": "usd"})
    assert response.status_code == 200, response.text
    assert response.json() == {"currency": "USD", "units_per_btc": 62500, "source": "kraken"}
    assert hits(fake_rates) == (2, 0, 0)
    row = await buy(live, "acme")
    assert rate_columns(row) == (40_000, "USD", 2_500, 625_000_000, "kraken")
    assert hits(fake_rates) == (2, 0, 0)


async def test_a_failed_lookup_is_not_cached(live: Any, fake_rates: FakeRates) -> None:
    for source in SOURCES:
        fake_rates.fail(source, "http_500")  # type: ignore[arg-type]
    await usd_product(live, "acme", 2_500)
    response = await live.client.post("/v1/purchase", json={"product": "acme"})
    assert response.status_code == 502
    fake_rates.clear_failures()
    fake_rates.set_price("USD", "50000")
    assert (await buy(live, "acme")).amount_sats == 50_000
    assert hits(fake_rates) == (2, 1, 1)


# --- pins win and are re-read -------------------------------------------------------------


async def test_pins_win_over_cache_and_sources_and_are_read_every_time(
    live: Any, fake_rates: FakeRates
) -> None:
    fake_rates.set_price("USD", "40000")
    await usd_product(live, "acme", 2_500)
    assert (await buy(live, "acme")).exchange_rate_source == "kraken"

    # Written behind the process's back: no cache drop, yet the pin is seen at once.
    await write_pin_row(live, "USD", "50000")
    assert rate_columns(await buy(live, "acme")) == (
        50_000,
        "USD",
        2_500,
        500_000_000,
        "manual_pin",
    )
    await write_pin_row(live, "USD", "62500")
    assert rate_columns(await buy(live, "acme"))[0] == 40_000
    assert (await rates_list(live))["USD"]["source"] == "manual_pin"

    # Removed behind its back: the cached Kraken rate is still fresh.
    await write_pin_row(live, "USD", None)
    assert rate_columns(await buy(live, "acme")) == (
        62_500,
        "USD",
        2_500,
        400_000_000,
        "kraken",
    )
    assert hits(fake_rates) == (1, 0, 0)


async def test_a_refresh_answers_the_pin(live: Any, fake_rates: FakeRates) -> None:
    await put_pin(live, "USD", "50000")
    response = await live.admin_post("/v1/admin/rates/refresh", {"currency": "USD"})
    assert response.json() == {"currency": "USD", "units_per_btc": 50000, "source": "manual_pin"}
    assert fake_rates.requests == []


async def test_pin_set_and_clear_drop_the_cache_entry(live: Any, fake_rates: FakeRates) -> None:
    fake_rates.set_price("USD", "40000")
    await usd_product(live, "acme", 2_500)
    await buy(live, "acme")
    assert (await rates_list(live))["USD"]["source"] == "kraken"
    await put_pin(live, "USD", "50000")
    assert (await rates_list(live))["USD"]["source"] == "manual_pin"
    fake_rates.set_price("USD", "62500")
    response = await live.admin_delete("/v1/admin/rates/pins/USD")
    assert response.status_code == 200, response.text
    assert await rates_list(live) == {}
    row = await buy(live, "acme")
    assert rate_columns(row) == (40_000, "USD", 2_500, 625_000_000, "kraken")
    assert hits(fake_rates) == (2, 0, 0)


# --- GET /v1/admin/rates --------------------------------------------------------------------


async def test_rates_list_shows_cached_rates_and_pins(live: Any, fake_rates: FakeRates) -> None:
    assert await rates_list(live) == {}
    fake_rates.set_price("USD", "97123.45")
    await usd_product(live, "acme", 2_500)
    await buy(live, "acme")
    await put_pin(live, "EUR", "65000")
    await write_pin_row(live, "CHF", "88000.5")
    await write_pin_row(live, "GBP", "garbage")
    listed = await rates_list(live)
    assert set(listed) == {"USD", "EUR", "CHF"}
    assert listed["USD"]["units_per_btc"] == 97123.45
    assert listed["USD"]["source"] == "kraken"
    assert listed["EUR"]["units_per_btc"] == 65000
    assert listed["EUR"]["source"] == "manual_pin"
    assert listed["CHF"] == {
        "currency": "CHF",
        "units_per_btc": 88000.5,
        "source": "manual_pin",
        "fetched_at_secs_ago": 0,
    }
    response = await live.admin_get("/v1/admin/rates")
    # A JSON number, never a string.
    assert '"units_per_btc":"' not in response.text.replace(" ", "")


async def test_rates_admin_needs_credentials(live: Any) -> None:
    assert (await live.client.get("/v1/admin/rates")).status_code == 401
    response = await live.client.post("/v1/admin/rates/refresh", json={"currency": "USD"})
    assert response.status_code == 401
    response = await live.client.put("/v1/admin/rates/pins/USD", json={"units_per_btc": "1"})
    assert response.status_code == 401
    assert (await live.client.delete("/v1/admin/rates/pins/USD")).status_code == 401
    assert await pin_row(live, "USD") is None


# --- POST /v1/admin/rates/refresh -----------------------------------------------------------


async def test_refresh_audits(live: Any, fake_rates: FakeRates) -> None:
    fake_rates.set_source_price("kraken", "EUR", "61000.25")
    response = await live.admin_post("/v1/admin/rates/refresh", {"currency": " eur "})
    assert response.status_code == 200, response.text
    assert response.json() == {"currency": "EUR", "units_per_btc": 61000.25, "source": "kraken"}
    [audit] = await audit_rows(live, "rate.refresh")
    assert (audit.target_kind, audit.target_id) == ("rate", "EUR")
    assert audit.details == {"currency": "EUR", "source": "kraken", "units_per_btc": 61000.25}
    assert (audit.actor_kind, audit.actor_id) == ("admin_api_key", "master")
    assert (await rates_list(live))["EUR"]["units_per_btc"] == 61000.25


@pytest.mark.parametrize("currency", ["SAT", "btc", "Sat"])
async def test_refresh_of_sat_or_btc_is_the_identity(
    live: Any, fake_rates: FakeRates, currency: str
) -> None:
    response = await live.admin_post("/v1/admin/rates/refresh", {"currency": currency})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "currency": currency.upper(),
        "units_per_btc": 100_000_000,
        "source": "identity",
    }
    assert fake_rates.requests == []


async def test_refresh_currency_must_be_3_to_5_letters(live: Any, fake_rates: FakeRates) -> None:
    bodies: list[dict[str, Any]] = [
        {"currency": "US"},
        {"currency": "DOLLAR"},
        {"currency": "U5D"},
        {"currency": ""},
        {"currency": "US D"},
        {"currency": "ÜSD"},
        {"currency": 840},
        {"currency": None},
        {},
    ]
    for body in bodies:
        response = await live.admin_post("/v1/admin/rates/refresh", body)
        assert_error(response, 400, "bad_request")
    assert fake_rates.requests == []
    assert await audit_rows(live, "rate.refresh") == []


async def test_refresh_accepts_any_3_to_5_letter_code(live: Any, fake_rates: FakeRates) -> None:
    fake_rates.set_price("USDT", "97000")
    response = await live.admin_post("/v1/admin/rates/refresh", {"currency": "usdt"})
    assert response.status_code == 200, response.text
    # Kraken has no pair for it and is skipped; Coinbase answers.
    assert response.json() == {"currency": "USDT", "units_per_btc": 97000, "source": "coinbase"}
    assert hits(fake_rates) == (0, 1, 0)


async def test_refresh_failure_is_502_with_every_source(live: Any, fake_rates: FakeRates) -> None:
    fake_rates.fail("kraken", "http_500")
    fake_rates.fail("coinbase", "zero")
    fake_rates.fail("coingecko", "missing_value")
    response = await live.admin_post("/v1/admin/rates/refresh", {"currency": "USD"})
    assert_error(response, 502, "upstream_error")
    message = response.json()["message"]
    assert message.startswith("upstream error: rate refresh failed: kraken: ")
    assert "; coinbase: " in message and "; coingecko: " in message
    assert "rate fetch failed" not in message


async def test_refresh_drops_the_old_entry_even_when_it_fails(
    live: Any, fake_rates: FakeRates
) -> None:
    await usd_product(live, "acme", 2_500)
    await buy(live, "acme")
    for source in SOURCES:
        fake_rates.fail(source, "http_500")  # type: ignore[arg-type]
    response = await live.admin_post("/v1/admin/rates/refresh", {"currency": "USD"})
    assert response.status_code == 502
    assert "USD" not in await rates_list(live)


# --- PUT and DELETE /v1/admin/rates/pins/{currency} ---------------------------------------


@pytest.mark.parametrize(
    ("value", "stored", "answered"),
    [
        ("50000", "50000", 50000),
        (" 97123.45678 ", "97123.45678", 97123.45678),
        (65000, "65000", 65000),
        (65000.5, "65000.5", 65000.5),
        ("1E+5", "100000", 100000),
        ("0.5", "0.5", 0.5),
        ("0.00005", "0.00005", 5e-05),
    ],
)
async def test_pin_set(pinned_only: Any, value: Any, stored: str, answered: Any) -> None:
    body = await put_pin(pinned_only, "usd", value)
    assert body == {"currency": "USD", "units_per_btc": answered, "source": "manual_pin"}
    assert type(body["units_per_btc"]) is type(answered)
    assert await pin_row(pinned_only, "USD") == stored
    [audit] = await audit_rows(pinned_only, "rate.pin_set")
    assert (audit.target_kind, audit.target_id) == ("rate", "USD")
    assert set(audit.details) == {"currency", "units_per_btc"}
    assert audit.details["currency"] == "USD"
    assert Decimal(str(audit.details["units_per_btc"])) == Decimal(stored)
    listed = await rates_list(pinned_only)
    assert listed["USD"]["units_per_btc"] == answered
    assert listed["USD"]["source"] == "manual_pin"


async def test_pin_value_must_be_a_positive_decimal(pinned_only: Any) -> None:
    values: list[Any] = [
        "0",
        "-1",
        "0.0",
        "abc",
        "",
        " ",
        "NaN",
        "Infinity",
        "-0",
        "1/3",
        0,
        -5,
        True,
        None,
        [],
        {},
        # Positive, but 0 in the invoice encoding: nothing could be converted at it.
        "0.00001",
        "0.0000499",
        1e-05,
    ]
    for value in values:
        assert_error(await pin(pinned_only, "USD", value), 400, "bad_request")
    assert await pin_row(pinned_only, "USD") is None
    assert await audit_rows(pinned_only, "rate.pin_set") == []


async def test_pin_body_and_currency_rules(pinned_only: Any) -> None:
    for content in (b"", b"{}", b"[]", b"not json", json.dumps({"units": "5"}).encode()):
        response = await pinned_only.client.put(
            "/v1/admin/rates/pins/USD",
            content=content,
            headers={**ADMIN, "content-type": "application/json"},
        )
        assert_error(response, 400, "bad_request")
    for currency in ("US", "DOLLAR", "U5D"):
        assert_error(await pin(pinned_only, currency, "50000"), 400, "bad_request")
        response = await pinned_only.admin_delete(f"/v1/admin/rates/pins/{currency}")
        assert_error(response, 400, "bad_request")
    assert await audit_rows(pinned_only, "rate.pin_set") == []


async def test_pin_replace_and_idempotent_delete(pinned_only: Any) -> None:
    await usd_product(pinned_only, "acme", 2_500)
    await put_pin(pinned_only, "USD", "50000")
    await put_pin(pinned_only, "USD", "62500")
    assert await pin_row(pinned_only, "USD") == "62500"
    assert (await buy(pinned_only, "acme")).amount_sats == 40_000

    for _ in range(2):
        response = await pinned_only.admin_delete("/v1/admin/rates/pins/usd")
        assert response.status_code == 200, response.text
        assert response.json() == {"ok": True, "currency": "USD"}
    assert await pin_row(pinned_only, "USD") is None
    audits = await audit_rows(pinned_only, "rate.pin_cleared")
    assert len(audits) == 2
    for audit in audits:
        assert (audit.target_kind, audit.target_id) == ("rate", "USD")
        assert audit.details == {"currency": "USD"}
    assert len(await audit_rows(pinned_only, "rate.pin_set")) == 2
    response = await pinned_only.client.post("/v1/purchase", json={"product": "acme"})
    assert_error(response, 502, "upstream_error")


async def test_a_pin_too_small_to_encode_is_ignored_not_a_crash(pinned_only: Any) -> None:
    await usd_product(pinned_only, "acme", 2_500)
    await write_pin_row(pinned_only, "USD", "0.00001")
    response = await pinned_only.client.post("/v1/purchase", json={"product": "acme"})
    assert_error(response, 502, "upstream_error")
    assert "USD" not in await rates_list(pinned_only)


async def test_a_source_price_too_small_to_encode_is_a_failure(
    live: Any, fake_rates: FakeRates
) -> None:
    fake_rates.set_source_price("kraken", "USD", "0.00001")
    fake_rates.set_source_price("coinbase", "USD", "50000")
    await usd_product(live, "acme", 2_500)
    row = await buy(live, "acme")
    assert rate_columns(row) == (50_000, "USD", 2_500, 500_000_000, "coinbase")
    assert hits(fake_rates) == (1, 1, 0)
