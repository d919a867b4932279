"""Rendering HTML pages: one autoescaping template environment, content-hashed static
assets, and the security headers every page carries (web.md 2.1, 3)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request

from keysat import __version__
from keysat.errors import not_found
from keysat.web.format import (
    DEFAULT_BRAND,
    dom_id,
    format_money,
    script_json,
    text_on,
    thousands,
    utc_text,
)

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

CSP_DIRECTIVES = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
)
CSP = "; ".join(CSP_DIRECTIVES)
CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    url_name: str
    body: bytes
    content_type: str


def _load_assets() -> dict[str, Asset]:
    """Every static file under a name carrying its content hash, so it can be cached for a
    year and a new release is fetched at once."""
    assets = {}
    for path in sorted(STATIC.iterdir()):
        if path.suffix not in CONTENT_TYPES:
            continue
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:12]
        assets[path.name] = Asset(
            f"{path.stem}.{digest}{path.suffix}", body, CONTENT_TYPES[path.suffix]
        )
    return assets


ASSETS = _load_assets()
ASSETS_BY_URL = {asset.url_name: asset for asset in ASSETS.values()}


def asset_url(name: str) -> str:
    return f"/static/{ASSETS[name].url_name}"


def page_data(value: Any) -> Markup:
    """The body of the page's one JSON data block; script_json leaves nothing that HTML
    parsing could act on, which is what makes this Markup safe."""
    return Markup(script_json(value))  # noqa: S704 - escaped for a script context just above


environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.globals.update(asset=asset_url, version=__version__)
environment.filters.update(
    page_data=page_data, utc_text=utc_text, thousands=thousands, dom_id=dom_id, money=format_money
)

router = APIRouter()


@dataclass(frozen=True)
class Brand:
    """The merchant's colour (already normalised by format.brand_colour)."""

    colour: str

    @property
    def on_colour(self) -> str:
        return text_on(self.colour)


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    private: bool = True,
    brand: Brand | None = None,
    referrer_policy: str | None = None,
) -> HTMLResponse:
    """A page with the headers of web.md 3.5. `private` pages (they show an invoice or a
    key) are never cached and send no referrer. A `brand` other than the default colour
    reaches the page through one nonce-protected style block (web.md 6.10). A page whose
    forms are checked for our Origin names its own `referrer_policy`: under no-referrer a
    browser sends `Origin: null` even to its own origin."""
    settings = request.app.state.keysat.settings
    csp = CSP
    nonce = None
    if brand is not None and brand.colour != DEFAULT_BRAND:
        nonce = secrets.token_urlsafe(16)
        csp = CSP.replace("style-src 'self'", f"style-src 'self' 'nonce-{nonce}'")
    values = {**context, "sandbox": settings.sandbox_mode, "style_nonce": nonce, "brand": brand}
    html = environment.get_template(template).render(values)
    response = HTMLResponse(html, status_code=status)
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Referrer-Policy"] = referrer_policy or (
        "no-referrer" if private else "strict-origin-when-cross-origin"
    )
    response.headers["Cache-Control"] = "no-store" if private else "no-cache"
    return response


def message_page(
    request: Request,
    title: str,
    message: str,
    *,
    status: int,
    link: tuple[str, str] | None = None,
    private: bool = True,
) -> HTMLResponse:
    return render(
        request,
        "message.html",
        {"title": title, "message": message, "link": link},
        status=status,
        private=private,
    )


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> Response:
    asset = ASSETS_BY_URL.get(name)
    if asset is None:
        raise not_found("no such endpoint")
    return Response(
        asset.body,
        media_type=asset.content_type,
        headers={"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"},
    )
