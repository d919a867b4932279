"""Fake exchange-rate sources (payments.md, sections 6.1 and 7.3) on one 127.0.0.1 server.

Kraken, Coinbase and CoinGecko use different paths, so the one base URL serves as
KEYSAT_KRAKEN_URL, KEYSAT_COINBASE_URL and KEYSAT_COINGECKO_URL at once:

    GET /0/public/Ticker?pair=XXBTZUSD                            Kraken (USD or EUR pairs)
    GET /v2/exchange-rates?currency=BTC                           Coinbase
    GET /api/v3/simple/price?ids=bitcoin&vs_currencies=usd,eur    CoinGecko

Prices are decimal text in currency units per BTC and reach the wire without passing
through a binary float: Kraken writes the text padded to five decimals, Coinbase as a
string, CoinGecko as a JSON number token spelled exactly as given.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from decimal import Decimal, InvalidOperation
from typing import Literal, get_args

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from .base import RecordedRequest, RestartablePeer

Source = Literal["kraken", "coinbase", "coingecko"]
FailMode = Literal[
    "http_500", "kraken_error", "malformed_json", "missing_value", "zero", "unparseable", "hang"
]

DEFAULT_PRICES: dict[str, str] = {"USD": "97123.45", "EUR": "89456.78"}
# Past the server's 8 s source timeout (payments.md 2.6).
DEFAULT_HANG_SECONDS = 9.0
HANG_POLL_SECONDS = 0.05
KRAKEN_DECIMALS = 5
KRAKEN_UNKNOWN_PAIR = "EQuery:Unknown asset pair"
UNPARSEABLE = "n/a"

_PATH_SOURCES: dict[str, Source] = {
    "/0/public/Ticker": "kraken",
    "/v2/exchange-rates": "coinbase",
    "/api/v3/simple/price": "coingecko",
}


def _decimal_text(value: str | Decimal | int) -> str:
    # Floats are refused: the server under test must never see a binary-float artefact.
    if isinstance(value, float | bool) or not isinstance(value, str | Decimal | int):
        raise TypeError(f"price must be a decimal string, Decimal or int, not {type(value)}")
    text = str(value).strip()
    try:
        finite = Decimal(text).is_finite()
    except InvalidOperation:
        finite = False
    if not finite:
        raise ValueError(f"price {value!r} is not a finite decimal")
    return text


def _kraken_text(text: str) -> str:
    number = Decimal(text)
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked by _decimal_text
    if exponent >= -KRAKEN_DECIMALS:
        return f"{number:.{KRAKEN_DECIMALS}f}"
    return format(number, "f")


class FakeRates(RestartablePeer):
    """The three rate sources on a free 127.0.0.1 port; a context manager or start()/stop().

    `set_price` sets the price every source reports; `set_source_price` overrides it for one
    source. `fail(source, mode)` lasts until `clear_failures`.
    """

    def __init__(
        self,
        prices: dict[str, str] | None = None,
        *,
        hang_seconds: float = DEFAULT_HANG_SECONDS,
    ) -> None:
        self.hang_seconds = hang_seconds
        self._lock = threading.Lock()
        super().__init__()
        self._prices = {
            ccy.upper(): _decimal_text(v) for ccy, v in (prices or DEFAULT_PRICES).items()
        }
        self._overrides: dict[Source, dict[str, str]] = {s: {} for s in get_args(Source)}
        self._failures: dict[Source, tuple[FailMode, float]] = {}
        self._requests: list[RecordedRequest] = []

    # -- controls and inspection -------------------------------------------------------------

    def set_price(self, currency: str, value: str | Decimal | int) -> None:
        """Units of `currency` per BTC, reported by every source without an override."""
        text = _decimal_text(value)
        with self._lock:
            self._prices[currency.upper()] = text

    def set_source_price(self, source: Source, currency: str, value: str | Decimal | int) -> None:
        self._check_source(source)
        text = _decimal_text(value)
        with self._lock:
            self._overrides[source][currency.upper()] = text

    def fail(self, source: Source, mode: FailMode, *, hang_seconds: float | None = None) -> None:
        """Make every request to `source` fail in `mode` until `clear_failures`:

        http_500        HTTP 500, plain-text body
        kraken_error    (Kraken only) HTTP 200, `{"error": ["EQuery:Unknown asset pair"]}`
        malformed_json  HTTP 200, a truncated JSON document
        missing_value   HTTP 200, the right shape without the price
        zero            HTTP 200, the price 0
        unparseable     HTTP 200, the price "n/a"
        hang            sleep `hang_seconds` (default: the constructor's), then answer normally
        """
        self._check_source(source)
        if mode not in get_args(FailMode):
            raise ValueError(f"unknown failure mode {mode!r}")
        if mode == "kraken_error" and source != "kraken":
            raise ValueError("kraken_error is Kraken's error shape")
        with self._lock:
            self._failures[source] = (
                mode,
                self.hang_seconds if hang_seconds is None else hang_seconds,
            )

    def clear_failures(self, source: Source | None = None) -> None:
        with self._lock:
            if source is None:
                self._failures.clear()
            else:
                self._failures.pop(source, None)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received; `extra["source"]` names the source (None: unknown path)."""
        with self._lock:
            return list(self._requests)

    def hits(self, source: Source) -> int:
        self._check_source(source)
        with self._lock:
            return sum(1 for r in self._requests if r.extra["source"] == source)

    @staticmethod
    def _check_source(source: str) -> None:
        if source not in get_args(Source):
            raise ValueError(f"unknown source {source!r}; one of {get_args(Source)}")

    def _prices_for(self, source: Source) -> dict[str, str]:
        with self._lock:
            return {**self._prices, **self._overrides[source]}

    # -- HTTP --------------------------------------------------------------------------------

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        path: str = scope["path"]
        source = _PATH_SOURCES.get(path) if request.method == "GET" else None
        record = RecordedRequest(
            method=request.method,
            path=path,
            query=request.url.query,
            headers=dict(request.headers),
            body=await request.body(),
            extra={"source": source},
        )
        with self._lock:
            self._requests.append(record)
            failure = self._failures.get(source) if source is not None else None
        response = await self._answer(request, source, failure)
        record.status = response.status_code
        record.response_body = bytes(response.body)
        await response(scope, receive, send)

    async def _answer(
        self, request: Request, source: Source | None, failure: tuple[FailMode, float] | None
    ) -> Response:
        if source is None:
            return PlainTextResponse("Not Found", status_code=404)
        mode = None
        if failure is not None:
            mode, hang = failure
            if mode == "hang":
                await self._sleep_unless_stopped(hang)
                mode = None
            elif mode == "http_500":
                return PlainTextResponse("Internal Server Error", status_code=500)
            elif mode == "malformed_json":
                return Response(b'{"error": [], "result": {"XXBTZ', media_type="application/json")
        params = request.query_params
        if source == "kraken":
            return self._kraken(params.get("pair", ""), mode)
        if source == "coinbase":
            return self._coinbase(params.get("currency", "USD"), mode)
        return self._coingecko(params.get("ids", ""), params.get("vs_currencies", ""), mode)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, HANG_POLL_SECONDS))

    def _kraken(self, pair: str, mode: FailMode | None) -> Response:
        # Kraken also accepts the short alias (XBTUSD) and answers under the full pair name.
        currency = pair.upper().removeprefix("XXBTZ").removeprefix("XBT")
        price = self._prices_for("kraken").get(currency) if len(currency) == 3 else None
        if mode == "kraken_error" or price is None:
            return JSONResponse({"error": [KRAKEN_UNKNOWN_PAIR]})
        if mode == "missing_value":
            return JSONResponse({"error": [], "result": {}})
        number = Decimal(price)

        def shifted(delta: int) -> str:
            return _kraken_text(str(number + delta))

        last = {"zero": _kraken_text("0"), "unparseable": UNPARSEABLE}.get(
            mode or "", _kraken_text(price)
        )
        # Every field but `c` differs from the last trade, so reading the wrong one shows.
        ticker = {
            "a": [shifted(1), "1", "1.000"],
            "b": [shifted(-1), "2", "2.000"],
            "c": [last, "0.00100000"],
            "v": ["1234.56789012", "2345.67890123"],
            "p": [shifted(-10), shifted(-20)],
            "t": [12345, 23456],
            "l": [shifted(-500), shifted(-900)],
            "h": [shifted(500), shifted(900)],
            "o": shifted(-50),
        }
        return JSONResponse({"error": [], "result": {f"XXBTZ{currency}": ticker}})

    def _coinbase(self, base: str, mode: FailMode | None) -> Response:
        if base.upper() != "BTC":
            return JSONResponse(
                {"errors": [{"id": "invalid_request", "message": "fake serves BTC only"}]},
                status_code=400,
            )
        rates = self._prices_for("coinbase")
        if mode == "missing_value":
            rates = {}
        elif mode in ("zero", "unparseable"):
            rates = {ccy: "0" if mode == "zero" else UNPARSEABLE for ccy in rates}
        return JSONResponse({"data": {"currency": "BTC", "rates": rates}})

    def _coingecko(self, ids: str, vs_currencies: str, mode: FailMode | None) -> Response:
        if not ids or not vs_currencies:
            return JSONResponse({"error": "Missing parameter ids or vs_currencies"}, 400)
        if "bitcoin" not in ids.lower().split(","):
            return Response(b"{}", media_type="application/json")
        prices = self._prices_for("coingecko")
        fields = []
        if mode != "missing_value":
            for vs in vs_currencies.lower().split(","):
                price = prices.get(vs.upper())
                if price is None:
                    continue
                token = {"zero": "0", "unparseable": json.dumps(UNPARSEABLE)}.get(mode or "", price)
                fields.append(f"{json.dumps(vs)}: {token}")
        # Written by hand: a JSON number must reach the client spelled as configured.
        text = '{"bitcoin": {' + ", ".join(fields) + "}}"
        return Response(text.encode(), media_type="application/json")
