"""Pure formatting and safety rules for the buyer pages (web.md 2.5, 3.3, 3.4, 6.4-6.5,
6.10). No database, no request: every page and test uses these same functions, and
static/buyer.js mirrors the money and date rules for what it renders itself."""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from keysat.billing.pricing import percent_text

DEFAULT_BRAND = "#1E3A5F"
SYMBOLS = {"USD": "$", "EUR": "€"}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
CADENCES = {
    7: (" / wk", "weekly"),
    30: (" / mo", "monthly"),
    90: (" / qtr", "quarterly"),
    180: (" / 6 mo", "every 6 months"),
    365: (" / yr", "yearly"),
}
_HEX6 = re.compile(r"#[0-9A-Fa-f]{6}")
_HEX3 = re.compile(r"#[0-9A-Fa-f]{3}")
_ERROR_PREFIX = re.compile(
    r"^(bad request|conflict|not found|too many requests|upstream error|payment provider not "
    r"configured|unauthorized|forbidden): "
)
_SCRIPT_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


# --- money and tiers --------------------------------------------------------------------------


def format_money(amount: int, currency: str) -> str:
    """An amount in its smallest unit: "50,000 sats", "1 sat", "$24.99", "€1,250"."""
    if currency in ("SAT", "BTC"):
        return f"{amount:,} sat" if amount == 1 else f"{amount:,} sats"
    whole, cents = divmod(amount, 100)
    number = f"{whole:,}" if cents == 0 else f"{whole:,}.{cents:02d}"
    return f"{SYMBOLS.get(currency, currency + ' ')}{number}"


def cadence_suffix(period_days: int) -> str:
    known = CADENCES.get(period_days)
    return known[0] if known else f" / {period_days} days"


def renews_line(period_days: int) -> str:
    known = CADENCES.get(period_days)
    return f"Renews {known[1]}" if known else f"Renews every {period_days} days"


def format_price(amount: int, currency: str, period_days: int = 0) -> str:
    """A price as a card shows it: "Free", "$25 / mo", "100,000 sats / yr"."""
    if amount == 0:
        return "Free"
    suffix = cadence_suffix(period_days) if period_days > 0 else ""
    return format_money(amount, currency) + suffix


def format_duration(seconds: int) -> str:
    if seconds == 0:
        return "Perpetual"
    days, rest = divmod(seconds, 86_400)
    if rest == 0:
        return "1 day" if days == 1 else f"{days} days"
    hours = seconds // 3600
    return "1 hour" if hours == 1 else f"{hours} hours"


def format_devices(max_machines: int) -> str:
    if max_machines == 0:
        return "Unlimited devices"
    return "1 device" if max_machines == 1 else f"Up to {max_machines} devices"


def ribbon_text(kind: str, amount: int, discounted_price: int) -> str:
    """The launch-special ribbon of a tier card (web.md 6.4)."""
    if kind == "free_license" or discounted_price == 0:
        return "FREE"
    if kind == "percent":
        return f"{percent_text(amount)}% OFF"
    if kind == "set_price":
        return "LIMITED PRICE"
    return "LAUNCH SPECIAL"


def discount_tag(kind: str, amount: int, off: int, currency: str, final: int) -> str:
    """The tag beside a discounted price (web.md 6.5); `off` is in `currency`'s unit."""
    if kind == "free_license" or final == 0:
        return "Free"
    if kind == "percent":
        return f"{percent_text(amount)}% off"
    if kind == "set_price":
        return "Flat price"
    return f"{format_money(off, currency)} off"


def percent_off(price: int, basis_points: int) -> int:
    """The purchase arithmetic of a percent code, in any unit (public-api.md 1.11)."""
    return price * min(basis_points, 10_000) // 10_000


# --- times --------------------------------------------------------------------------------------


def format_date(at: datetime) -> str:
    """ "12 Mar 2026", in UTC."""
    return f"{at.day} {MONTHS[at.month - 1]} {at.year}"


def format_date_time(at: datetime) -> str:
    """ "12 Mar 2026, 14:05 (UTC)", for where the time of day matters."""
    return f"{format_date(at)}, {at.hour:02d}:{at.minute:02d} (UTC)"


# --- brand colour -------------------------------------------------------------------------------


def brand_colour(stored: str | None) -> str:
    """#RRGGBB, or #RGB expanded; anything else is the default (web.md 6.10)."""
    value = (stored or "").strip()
    if _HEX6.fullmatch(value):
        return value.upper()
    if _HEX3.fullmatch(value):
        return "#" + "".join(digit * 2 for digit in value[1:]).upper()
    return DEFAULT_BRAND


def _luminance(colour: str) -> float:
    channels = []
    for start in (1, 3, 5):
        value = int(colour[start : start + 2], 16) / 255
        channels.append(value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4)
    red, green, blue = channels
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast_ratio(first: str, second: str) -> float:
    lighter, darker = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def text_on(colour: str) -> str:
    """White or black, whichever contrasts more with the brand colour."""
    white, black = contrast_ratio(colour, "#FFFFFF"), contrast_ratio(colour, "#000000")
    return "#FFFFFF" if white >= black else "#000000"


# --- links from operators and requests ------------------------------------------------------------


def safe_link(url: str | None) -> str | None:
    """An operator URL rendered as a link only when it is http(s) with a host (web.md 3.4)."""
    if not url:
        return None
    value = url.strip()
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if any(char.isspace() or ord(char) < 32 for char in value):
        return None
    return value


def mailto_address(email: str | None) -> str | None:
    """One plain address, or None: no spaces, commas or query characters."""
    if not email:
        return None
    value = email.strip()
    local, at, domain = value.partition("@")
    if not at or not local or not domain or "@" in domain or "." not in domain:
        return None
    if any(char.isspace() or char in ",;?&=#%<>\"'()[]\\:" for char in value):
        return None
    return value


def checkout_allowed(url: str, own_origin: str) -> bool:
    """A provider checkout the page may send the buyer to (web.md 3.4): absolute https, http
    on a loopback or private address, or this server's own origin."""
    try:
        parts = urlsplit(url)
        own = urlsplit(own_origin)
        port, own_port = parts.port, own.port
    except ValueError:
        return False
    if not parts.hostname:
        return False
    if (parts.scheme, parts.hostname, port) == (own.scheme, own.hostname, own_port):
        return True
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    if parts.hostname == "localhost":
        return True
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return False
    return address.is_loopback or address.is_private


# --- script data and negotiation -----------------------------------------------------------------


def script_json(value: Any) -> str:
    """JSON for the page's one data block: `<`, `>`, `&`, U+2028 and U+2029 escaped, so no
    value can close the element or start markup (web.md 3.3)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return "".join(_SCRIPT_ESCAPES.get(char, char) for char in text)


def _media_quality(accept: str, wanted: str) -> float:
    """The quality the Accept header gives a media type: its most specific match wins."""
    kind = wanted.split("/")[0]
    best: tuple[int, float] = (-1, 0.0)
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        specificity = {wanted: 2, f"{kind}/*": 1, "*/*": 0}.get(media)
        if specificity is None or specificity <= best[0]:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best = (specificity, quality)
    return best[1]


def prefers_html(accept: str | None) -> bool:
    """True only when Accept explicitly ranks text/html above application/json (web.md 5)."""
    if not accept:
        return False
    return _media_quality(accept, "text/html") > _media_quality(accept, "application/json")


def buyer_message(api_message: str) -> str:
    """An API error message as a buyer reads it: without the "bad request: " category."""
    text = _ERROR_PREFIX.sub("", api_message, count=1)
    return text[:1].upper() + text[1:] if text else text


def shorten(text: str, limit: int = 200) -> str:
    """About `limit` characters, cut at a word, with an ellipsis."""
    clean = " ".join(text.split())
    if len(clean) <= limit:
        return clean
    cut = clean[:limit].rsplit(" ", 1)[0] or clean[:limit]
    return cut.rstrip(" ,.;:") + "…"


# --- admin UI -------------------------------------------------------------------------------


def utc_text(value: str | datetime) -> str:
    """An RFC 3339 time as the admin shows it without JavaScript (web.md 2.5): absolute UTC."""
    if isinstance(value, datetime):
        at = value
    else:
        try:
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    return format_date_time(at.astimezone(UTC) if at.tzinfo else at)


def thousands(value: int) -> str:
    return f"{value:,}"


def dom_id(text: str) -> str:
    """An element id derived from a URL path, for label and dialog references."""
    return "d-" + re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")
