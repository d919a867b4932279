"""Web sessions, their cookie and the CSRF rule (access.md 6.4-6.6).

Sessions run on the system clock (billing.md 9.3), read through the `now` the store was
built with, so tests can steer it without touching the sandbox test clock.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from email.parser import BytesParser
from email.policy import default as default_policy
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from keysat.access.client import request_host
from keysat.access.models import WebSession
from keysat.access.tokens import new_secret, sha256_hex
from keysat.clock import clock
from keysat.db import Database
from keysat.errors import forbidden, unauthorized
from keysat.settings import Settings, normalize_origin
from keysat.wire import MAX_BODY_BYTES, new_id

log = logging.getLogger(__name__)

SESSION_COOKIE = "keysat_session"
SESSION_LIFETIME = timedelta(hours=24)
IDLE_TIMEOUT = timedelta(hours=2)
# Activity is recorded at most once a minute, so busy sessions do not write on every call.
SEEN_RESOLUTION = timedelta(seconds=60)
USER_AGENT_MAX = 512
LOGIN_METHODS = ("password", "api_key")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The body types a cross-site HTML form can send without a CORS preflight.
FORM_MEDIA_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


# --- the cookie ------------------------------------------------------------------------------


def cookie_token(request: Request) -> str | None:
    """The `keysat_session` value: pairs split on `;`, trimmed, surrounding quotes removed."""
    for header in request.headers.getlist("cookie"):
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name.strip() == SESSION_COOKIE:
                token = value.strip().strip('"')
                return token or None
    return None


def _cookie(value: str, max_age: int, secure: bool) -> str:
    attributes = ["Path=/", "HttpOnly", *(["Secure"] if secure else []), "SameSite=Strict"]
    return "; ".join([f"{SESSION_COOKIE}={value}", *attributes, f"Max-Age={max_age}"])


def session_cookie(token: str, secure: bool) -> str:
    return _cookie(token, int(SESSION_LIFETIME.total_seconds()), secure)


def clearing_cookie(secure: bool) -> str:
    return _cookie("", 0, secure)


# --- validity --------------------------------------------------------------------------------


def session_valid(row: WebSession, at: datetime, master_hash: str) -> bool:
    """Within 24 h of login, used within the last 2 h, and, when it was opened with the
    master key, opened with the key that is configured now."""
    if at >= row.expires_at or at >= row.last_seen_at + IDLE_TIMEOUT:
        return False
    return row.login_method != "api_key" or row.master_key_hash == master_hash


# --- CSRF ------------------------------------------------------------------------------------

Origin = tuple[str, str, int | None]


def parse_origin(text: str, *, whole_url: bool) -> Origin | None:
    """(scheme, host, port) of an `Origin` value, or of a `Referer` URL with `whole_url`."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        return None
    if not whole_url and (parts.path not in ("", "/") or parts.query or parts.fragment):
        return None
    return parts.scheme, parts.hostname, port


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def same_host(origin: Origin, host_header: str) -> bool:
    """The origin's host[:port] is the host the request was sent to."""
    scheme, hostname, port = origin
    try:
        target = urlsplit(f"//{host_header.strip()}")
        target_port = target.port
    except ValueError:
        return False
    if not target.hostname or target.hostname != hostname.lower():
        return False
    return (port or _default_port(scheme)) == (target_port or _default_port(scheme))


def origin_allowed(origin: Origin, public_origin: str, host: str | None) -> bool:
    if normalize_origin(*origin) == public_origin:
        return True
    return host is not None and same_host(origin, host)


def safe_next(value: str | None) -> str:
    """web.md 3.4: only a path under /admin/ on this origin; anything else is ignored."""
    if (
        value
        and value.startswith("/admin/")
        and not value.startswith("//")
        and "\\" not in value
        and not any(ord(char) < 0x20 for char in value)
    ):
        return value
    return "/admin/"


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def csrf_verdict(
    origin: str | None,
    referer: str | None,
    content_type: str | None,
    public_origin: str,
    host: str | None,
) -> str:
    """`refuse`, `token` (allowed only with the session's CSRF token) or `pass`."""
    if origin is not None:
        source = parse_origin(origin, whole_url=False)
    elif referer is not None:
        source = parse_origin(referer, whole_url=True)
    else:
        return "token"
    if source is None or not origin_allowed(source, public_origin, host):
        return "refuse"
    return "token" if media_type(content_type) in FORM_MEDIA_TYPES else "pass"


def multipart_field(content_type: str, body: bytes, name: str) -> str | None:
    message = BytesParser(policy=default_policy).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == name:
            content = part.get_content()
            return content if isinstance(content, str) else None
    return None


async def submitted_csrf_token(request: Request) -> str | None:
    """The `X-CSRF-Token` header, else the `csrf_token` field of a form body."""
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        return header
    content_type = request.headers.get("content-type") or ""
    kind = media_type(content_type)
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return None
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    # `body()` keeps the bytes on the request, so the handler can still read the form.
    body = await request.body()
    if kind == "multipart/form-data":
        return multipart_field(content_type, body, CSRF_FIELD)
    try:
        values = parse_qs(body.decode("utf-8"), keep_blank_values=True).get(CSRF_FIELD)
    except UnicodeDecodeError:
        return None
    return values[0] if values else None


# --- the store -------------------------------------------------------------------------------


class Sessions:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        master_hash: str,
        now: Callable[[], datetime] = clock.real_now,
    ) -> None:
        self._db = db
        self._settings = settings
        self._master_hash = master_hash
        self.now = now
        public = urlsplit(settings.public_url)
        self.public_origin = normalize_origin(public.scheme, public.hostname or "", public.port)

    def new(self, method: str, ip: str | None, user_agent: str | None) -> tuple[WebSession, str]:
        """A session row for the caller's transaction, and the raw token for the cookie."""
        token = new_secret()
        at = self.now()
        row = WebSession(
            id=new_id(),
            token_hash=sha256_hex(token),
            csrf_token=new_secret(),
            login_method=method,
            master_key_hash=self._master_hash if method == "api_key" else None,
            created_at=at,
            expires_at=at + SESSION_LIFETIME,
            last_seen_at=at,
            ip=ip,
            user_agent=user_agent[:USER_AGENT_MAX] if user_agent else None,
        )
        return row, token

    async def stored(self, request: Request) -> WebSession | None:
        """The session the cookie names, valid or not."""
        token = cookie_token(request)
        if token is None:
            return None
        async with self._db.read() as session:
            query = sa.select(WebSession).where(WebSession.token_hash == sha256_hex(token))
            return (await session.execute(query)).scalar_one_or_none()

    async def current(self, request: Request) -> WebSession | None:
        """The cookie's session if it is still valid, marked as active."""
        row = await self.stored(request)
        if row is None or not session_valid(row, self.now(), self._master_hash):
            return None
        await self._touch(row)
        return row

    async def authenticate(self, request: Request) -> WebSession:
        """The credential of an admin request without `Authorization` (access.md 5.5)."""
        row = await self.stored(request)
        if row is None or not session_valid(row, self.now(), self._master_hash):
            raise unauthorized()
        if request.method not in SAFE_METHODS:
            await self.check_csrf(request, row)
        # Only after the CSRF check: a forged request must not keep an idle session alive.
        await self._touch(row)
        return row

    async def check_csrf(self, request: Request, row: WebSession) -> None:
        verdict = csrf_verdict(
            request.headers.get("origin"),
            request.headers.get("referer"),
            request.headers.get("content-type"),
            self.public_origin,
            request_host(request, self._settings.trusted_proxies),
        )
        if verdict == "refuse":
            raise forbidden()
        if verdict == "token":
            sent = await submitted_csrf_token(request)
            if sent is None or not hmac.compare_digest(sent.encode(), row.csrf_token.encode()):
                raise forbidden()

    async def _touch(self, row: WebSession) -> None:
        at = self.now()
        if at - row.last_seen_at < SEEN_RESOLUTION:
            return
        try:
            async with self._db.write() as session:
                await session.execute(
                    sa.update(WebSession).where(WebSession.id == row.id).values(last_seen_at=at)
                )
        except SQLAlchemyError:
            log.warning("could not record activity of session %s", row.id, exc_info=True)

    async def delete(self, session_id: str) -> None:
        async with self._db.write() as session:
            await session.execute(sa.delete(WebSession).where(WebSession.id == session_id))

    @staticmethod
    async def delete_all(session: AsyncSession) -> None:
        await session.execute(sa.delete(WebSession))

    async def reap(self) -> int:
        """Delete sessions past their absolute lifetime or idle timeout; validity is checked
        on every use as well, so this only keeps the table small."""
        at = self.now()
        async with self._db.write() as session:
            result = await session.execute(
                sa.delete(WebSession).where(
                    sa.or_(
                        WebSession.expires_at <= at,
                        WebSession.last_seen_at <= at - IDLE_TIMEOUT,
                    )
                )
            )
        return int(result.rowcount)  # type: ignore[attr-defined]
