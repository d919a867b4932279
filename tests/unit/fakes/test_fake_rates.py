"""The fake exchange-rate sources, driven with plain httpx over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from fakes.rates import FailMode, FakeRates, Source

KRAKEN = "/0/public/Ticker"
COINBASE = "/v2/exchange-rates"
COINGECKO = "/api/v3/simple/price"
SOURCE_REQUESTS: dict[Source, tuple[str, dict[str, str]]] = {
    "kraken": (KRAKEN, {"pair": "XXBTZUSD"}),
    "coinbase": (COINBASE, {"currency": "BTC"}),
    "coingecko": (COINGECKO, {"ids": "bitcoin", "vs_currencies": "usd"}),
}
DEFAULT_USD: dict[Source, Any] = {
    "kraken": "97123.45000",
    "coinbase": "97123.45",
    "coingecko": Decimal("97123.45"),
}


@pytest.fixture
def rates() -> Iterator[FakeRates]:
    with FakeRates() as fake:
        yield fake


@pytest.fixture
def client(rates: FakeRates) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rates.url, timeout=5) as http:
        yield http


def usd_price(source: Source, response: httpx.Response) -> Any:
    """The USD price where the server reads it (payments.md 6.1), without binary floats."""
    body = json.loads(response.text, parse_float=Decimal)
    if source == "kraken":
        return body["result"]["XXBTZUSD"]["c"][0]
    if source == "coinbase":
        return body["data"]["rates"]["USD"]
    return body["bitcoin"]["usd"]


def get(client: httpx.Client, source: Source) -> httpx.Response:
    path, params = SOURCE_REQUESTS[source]
    return client.get(path, params=params)


def test_kraken_ticker_shape(client: httpx.Client) -> None:
    response = client.get(KRAKEN, params={"pair": "XXBTZUSD"})
    assert response.status_code == 200
    body = response.json()
    assert body["error"] == []
    ticker = body["result"]["XXBTZUSD"]
    assert ticker["c"] == ["97123.45000", "0.00100000"]
    assert set(ticker) == {"a", "b", "c", "v", "p", "t", "l", "h", "o"}
    # Only `c` carries the configured price: reading another field gives another number.
    assert ticker["a"][0] == "97124.45000" and ticker["b"][0] == "97122.45000"
    assert ticker["o"] != ticker["c"][0]
    eur = client.get(KRAKEN, params={"pair": "XXBTZEUR"}).json()
    assert eur["result"]["XXBTZEUR"]["c"][0] == "89456.78000"


def test_kraken_unknown_pair_is_an_error_array(client: httpx.Client) -> None:
    response = client.get(KRAKEN, params={"pair": "XXBTZJPY"})
    assert response.status_code == 200
    assert response.json() == {"error": ["EQuery:Unknown asset pair"]}


def test_coinbase_exchange_rates_shape(client: httpx.Client) -> None:
    response = client.get(COINBASE, params={"currency": "BTC"})
    assert response.status_code == 200
    assert response.json() == {
        "data": {"currency": "BTC", "rates": {"USD": "97123.45", "EUR": "89456.78"}}
    }


def test_coingecko_simple_price_shape(client: httpx.Client) -> None:
    response = client.get(COINGECKO, params={"ids": "bitcoin", "vs_currencies": "usd,eur"})
    assert response.status_code == 200
    assert response.text == '{"bitcoin": {"usd": 97123.45, "eur": 89456.78}}'
    other = client.get(COINGECKO, params={"ids": "ethereum", "vs_currencies": "usd"})
    assert other.json() == {}


def test_set_price_reaches_every_source_as_written(rates: FakeRates, client: httpx.Client) -> None:
    rates.set_price("usd", "97123.456789")
    assert usd_price("kraken", get(client, "kraken")) == "97123.456789"
    assert usd_price("coinbase", get(client, "coinbase")) == "97123.456789"
    assert usd_price("coingecko", get(client, "coingecko")) == Decimal("97123.456789")
    assert '"usd": 97123.456789}' in get(client, "coingecko").text

    rates.set_price("USD", Decimal("50000"))
    assert usd_price("kraken", get(client, "kraken")) == "50000.00000"
    assert get(client, "coingecko").text == '{"bitcoin": {"usd": 50000}}'


def test_source_price_overrides_one_source(rates: FakeRates, client: httpx.Client) -> None:
    rates.set_source_price("coinbase", "USD", "60000.5")
    assert usd_price("coinbase", get(client, "coinbase")) == "60000.5"
    assert usd_price("kraken", get(client, "kraken")) == "97123.45000"
    assert usd_price("coingecko", get(client, "coingecko")) == Decimal("97123.45")
    rates.set_price("USD", "1")
    assert usd_price("coinbase", get(client, "coinbase")) == "60000.5"


def test_prices_refuse_floats_and_non_numbers(rates: FakeRates) -> None:
    with pytest.raises(TypeError):
        rates.set_price("USD", 97123.45)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        rates.set_price("USD", "NaN")
    with pytest.raises(ValueError):
        rates.set_source_price("bitstamp", "USD", "1")  # type: ignore[arg-type]


ALL: tuple[Source, ...] = ("kraken", "coinbase", "coingecko")


@pytest.mark.parametrize("source", ALL)
def test_http_500(rates: FakeRates, client: httpx.Client, source: Source) -> None:
    rates.fail(source, "http_500")
    assert get(client, source).status_code == 500
    others = [s for s in ALL if s != source]
    assert all(get(client, s).status_code == 200 for s in others)


def test_kraken_error_mode(rates: FakeRates, client: httpx.Client) -> None:
    rates.fail("kraken", "kraken_error")
    response = get(client, "kraken")
    assert response.status_code == 200
    assert response.json()["error"] == ["EQuery:Unknown asset pair"]
    assert "result" not in response.json()
    with pytest.raises(ValueError):
        rates.fail("coinbase", "kraken_error")


@pytest.mark.parametrize("source", ALL)
def test_malformed_json(rates: FakeRates, client: httpx.Client, source: Source) -> None:
    rates.fail(source, "malformed_json")
    response = get(client, source)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


@pytest.mark.parametrize(
    ("source", "body"),
    [
        ("kraken", {"error": [], "result": {}}),
        ("coinbase", {"data": {"currency": "BTC", "rates": {}}}),
        ("coingecko", {"bitcoin": {}}),
    ],
)
def test_missing_value(
    rates: FakeRates, client: httpx.Client, source: Source, body: dict[str, Any]
) -> None:
    rates.fail(source, "missing_value")
    response = get(client, source)
    assert response.status_code == 200
    assert response.json() == body


@pytest.mark.parametrize(
    ("source", "mode", "value"),
    [
        ("kraken", "zero", "0.00000"),
        ("coinbase", "zero", "0"),
        ("coingecko", "zero", Decimal(0)),
        ("kraken", "unparseable", "n/a"),
        ("coinbase", "unparseable", "n/a"),
        ("coingecko", "unparseable", "n/a"),
    ],
)
def test_bad_values(
    rates: FakeRates, client: httpx.Client, source: Source, mode: FailMode, value: Any
) -> None:
    rates.fail(source, mode)
    response = get(client, source)
    assert response.status_code == 200
    assert usd_price(source, response) == value


@pytest.mark.parametrize("source", ALL)
def test_hang_outlasts_the_client_timeout(source: Source) -> None:
    with FakeRates(hang_seconds=5.0) as fake, httpx.Client(base_url=fake.url) as http:
        fake.fail(source, "hang", hang_seconds=0.6)
        path, params = SOURCE_REQUESTS[source]
        with pytest.raises(httpx.ReadTimeout):
            http.get(path, params=params, timeout=0.2)
        # A patient client gets the normal answer after the hang.
        late = http.get(path, params=params, timeout=3)
        assert late.status_code == 200
        assert usd_price(source, late) == DEFAULT_USD[source]


def test_default_hang_is_past_the_servers_8_second_timeout() -> None:
    assert FakeRates().hang_seconds > 8


def test_clear_failures(rates: FakeRates, client: httpx.Client) -> None:
    rates.fail("kraken", "http_500")
    rates.fail("coinbase", "zero")
    rates.clear_failures("kraken")
    assert get(client, "kraken").status_code == 200
    assert usd_price("coinbase", get(client, "coinbase")) == "0"
    rates.clear_failures()
    assert usd_price("coinbase", get(client, "coinbase")) == "97123.45"


def test_requests_and_hits(rates: FakeRates, client: httpx.Client) -> None:
    get(client, "kraken")
    get(client, "kraken")
    get(client, "coingecko")
    client.get("/nowhere")
    assert (rates.hits("kraken"), rates.hits("coinbase"), rates.hits("coingecko")) == (2, 0, 1)
    logged = rates.requests
    assert [(r.path, r.extra["source"], r.status) for r in logged] == [
        (KRAKEN, "kraken", 200),
        (KRAKEN, "kraken", 200),
        (COINGECKO, "coingecko", 200),
        ("/nowhere", None, 404),
    ]
    assert logged[0].query == "pair=XXBTZUSD"
    assert json.loads(logged[2].response_body) == {"bitcoin": {"usd": 97123.45}}


def test_one_url_for_all_three_settings(rates: FakeRates) -> None:
    # KEYSAT_KRAKEN_URL, KEYSAT_COINBASE_URL and KEYSAT_COINGECKO_URL all take this value.
    for source in ALL:
        path, params = SOURCE_REQUESTS[source]
        assert httpx.get(rates.url + path, params=params).status_code == 200
    assert rates.url.startswith("http://127.0.0.1:")
