"""The formatting and safety rules of the buyer pages (web.md 2.5, 3.3, 3.4, 5, 6.4, 6.10)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keysat.web.format import (
    brand_colour,
    buyer_message,
    cadence_suffix,
    checkout_allowed,
    contrast_ratio,
    discount_tag,
    format_date,
    format_date_time,
    format_devices,
    format_duration,
    format_money,
    format_price,
    mailto_address,
    prefers_html,
    renews_line,
    ribbon_text,
    safe_link,
    script_json,
    shorten,
    text_on,
)


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (50_000, "SAT", "50,000 sats"),
        (1, "SAT", "1 sat"),
        (0, "SAT", "0 sats"),
        (1_234_567, "BTC", "1,234,567 sats"),
        (2500, "USD", "$25"),
        (2499, "USD", "$24.99"),
        (125_000, "USD", "$1,250"),
        (5, "USD", "$0.05"),
        (2500, "EUR", "€25"),
        (950, "EUR", "€9.50"),
    ],
)
def test_money(amount: int, currency: str, text: str) -> None:
    assert format_money(amount, currency) == text


@pytest.mark.parametrize(
    ("days", "suffix", "renews"),
    [
        (7, " / wk", "Renews weekly"),
        (30, " / mo", "Renews monthly"),
        (90, " / qtr", "Renews quarterly"),
        (180, " / 6 mo", "Renews every 6 months"),
        (365, " / yr", "Renews yearly"),
        (14, " / 14 days", "Renews every 14 days"),
    ],
)
def test_cadence(days: int, suffix: str, renews: str) -> None:
    assert (cadence_suffix(days), renews_line(days)) == (suffix, renews)


def test_prices_carry_cadence_except_when_free() -> None:
    assert format_price(2500, "USD", 30) == "$25 / mo"
    assert format_price(100_000, "SAT", 365) == "100,000 sats / yr"
    assert format_price(0, "USD", 30) == "Free"
    assert format_price(40_000, "SAT") == "40,000 sats"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "Perpetual"),
        (86_400, "1 day"),
        (30 * 86_400, "30 days"),
        (3600, "1 hour"),
        (36 * 3600, "36 hours"),
        (2 * 3600 + 59 * 60, "2 hours"),
    ],
)
def test_durations(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


def test_devices() -> None:
    assert [format_devices(n) for n in (1, 3, 0)] == [
        "1 device",
        "Up to 3 devices",
        "Unlimited devices",
    ]


def test_dates_are_utc_day_month_year() -> None:
    at = datetime(2026, 3, 12, 14, 5, tzinfo=UTC)
    assert format_date(at) == "12 Mar 2026"
    assert format_date_time(at) == "12 Mar 2026, 14:05 (UTC)"


@pytest.mark.parametrize(
    ("kind", "amount", "discounted", "ribbon"),
    [
        ("percent", 2000, 40_000, "20% OFF"),
        ("percent", 1250, 1, "12.5% OFF"),
        ("percent", 10_000, 0, "FREE"),
        ("free_license", 0, 0, "FREE"),
        ("set_price", 1000, 1000, "LIMITED PRICE"),
        ("fixed_sats", 5000, 45_000, "LAUNCH SPECIAL"),
        ("fixed_sats", 50_000, 0, "FREE"),
    ],
)
def test_ribbon(kind: str, amount: int, discounted: int, ribbon: str) -> None:
    assert ribbon_text(kind, amount, discounted) == ribbon


def test_discount_tags() -> None:
    assert discount_tag("percent", 2500, 0, "USD", 1875) == "25% off"
    assert discount_tag("fixed_sats", 5000, 5000, "SAT", 45_000) == "5,000 sats off"
    assert discount_tag("fixed_sats", 1000, 1000, "USD", 1500) == "$10 off"
    assert discount_tag("set_price", 900, 1600, "USD", 900) == "Flat price"
    assert discount_tag("percent", 10_000, 2500, "USD", 0) == "Free"


def test_brand_colour_accepts_only_hex() -> None:
    assert brand_colour("#1e3a5f") == "#1E3A5F"
    assert brand_colour("#f0a") == "#FF00AA"
    for hostile in (None, "", "red", "#12345", "#1234567", "#1E3A5F;}body{x", "url(x)"):
        assert brand_colour(hostile) == "#1E3A5F"


@given(st.from_regex(r"#[0-9A-F]{6}", fullmatch=True))
def test_text_on_the_brand_colour_always_reads(colour: str) -> None:
    assert contrast_ratio(colour, text_on(colour)) >= 4.5


def test_text_on_light_and_dark_colours() -> None:
    assert text_on("#1E3A5F") == "#FFFFFF"
    assert text_on("#FFD700") == "#000000"


def test_links_only_for_http_urls() -> None:
    assert safe_link("https://help.example.com/x?y=1") == "https://help.example.com/x?y=1"
    assert safe_link(" http://example.com ") == "http://example.com"
    for hostile in (
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,x",
        "//x.com",
        "https://",
        "https://a.com/\nb",
        "ftp://a.com",
        None,
        "",
    ):
        assert safe_link(hostile) is None


def test_mailto_only_for_one_plain_address() -> None:
    assert mailto_address("help@example.com") == "help@example.com"
    for hostile in (
        "a@b.com, c@d.com",
        "a b@c.com",
        "a@b.com?cc=x",
        "nobody",
        "a@b",
        '"><img>@x.com',
        None,
    ):
        assert mailto_address(hostile) is None


def test_checkout_targets() -> None:
    own = "http://127.0.0.1:8080"
    assert checkout_allowed("http://127.0.0.1:8080/sandbox/checkout/sbx_1", own)
    assert checkout_allowed("https://pay.example.com/i/1", own)
    assert checkout_allowed("http://192.168.1.20:23000/i/1", own)
    assert checkout_allowed("http://localhost:23000/i/1", own)
    assert not checkout_allowed("http://pay.example.com/i/1", own)
    assert not checkout_allowed("http://btcpay:23000/i/1", own)
    assert not checkout_allowed("javascript:alert(1)", own)
    assert not checkout_allowed("/relative", own)


def test_script_json_cannot_close_its_element() -> None:
    value = {"name": "</script><script>alert(1)</script>&\u2028\u2029'\""}
    text = script_json(value)
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw not in text
    assert json.loads(text) == value


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("text/html", True),
        ("application/json", False),
        ("*/*", False),
        (None, False),
        ("", False),
        ("application/json, text/html;q=0.9", False),
        ("text/html;q=0.5, application/json;q=0.4", True),
        ("text/*", True),
        ("text/html;q=0, */*", False),
        ("text/html;q=bogus, */*;q=0.1", False),
    ],
)
def test_html_only_when_preferred_over_json(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


def test_buyer_messages_drop_the_category() -> None:
    assert buyer_message("bad request: unknown discount code") == "Unknown discount code"
    assert (
        buyer_message(
            "conflict: a trial of this product has already been used with this e-mail address"
        )
        == "A trial of this product has already been used with this e-mail address"
    )
    assert buyer_message("plain text") == "Plain text"


def test_shorten_cuts_at_a_word() -> None:
    assert shorten("short text") == "short text"
    long = "word " * 100
    cut = shorten(long, 50)
    assert len(cut) <= 51 and cut.endswith("…") and "  " not in cut
