"""Rendering HTML pages: one autoescaping template environment and the security headers
every page carries (web.md 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request

from keysat.errors import not_found

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

router = APIRouter()


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    private: bool = True,
) -> HTMLResponse:
    """A page with the headers of web.md 3.5. `private` pages (they show an invoice or a
    key) are never cached and send no referrer."""
    settings = request.app.state.keysat.settings
    html = environment.get_template(template).render(sandbox=settings.sandbox_mode, **context)
    response = HTMLResponse(html, status_code=status)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Referrer-Policy"] = (
        "no-referrer" if private else "strict-origin-when-cross-origin"
    )
    response.headers["Cache-Control"] = "no-store" if private else "no-cache"
    return response


def message_page(
    request: Request, title: str, message: str, *, status: int, link: tuple[str, str] | None = None
) -> HTMLResponse:
    return render(
        request,
        "message.html",
        {"title": title, "message": message, "link": link},
        status=status,
    )


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> FileResponse:
    path = (STATIC / name).resolve()
    if path.parent != STATIC.resolve() or not path.is_file():
        raise not_found("no such endpoint")
    return FileResponse(
        path,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
