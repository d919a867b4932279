"""The pure rules of web sessions: cookie, validity and the CSRF verdict (access.md 6.4,
6.6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from starlette.requests import Request

from keysat.access.models import WebSession
from keysat.access.sessions import (
    clearing_cookie,
    cookie_token,
    csrf_verdict,
    multipart_field,
    session_cookie,
    session_valid,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MASTER = "a" * 64
PUBLIC = "https://licensing.example.com"


def request_with_cookie(*headers: str) -> Request:
    raw = [(b"cookie", header.encode("latin-1")) for header in headers]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw})


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        (("keysat_session=abc",), "abc"),
        (("theme=dark;  keysat_session=abc ; other=1",), "abc"),
        (('keysat_session="abc"',), "abc"),
        (("keysat_session=",), None),
        (("other=abc",), None),
        (("xkeysat_session=abc",), None),
        (("a=1", "keysat_session=second-header"), "second-header"),
        ((), None),
    ],
)
def test_the_session_cookie_is_read_as_documented(
    headers: tuple[str, ...], token: str | None
) -> None:
    assert cookie_token(request_with_cookie(*headers)) == token


def test_cookie_attributes() -> None:
    assert session_cookie("tok", secure=False) == (
        "keysat_session=tok; Path=/; HttpOnly; SameSite=Strict; Max-Age=86400"
    )
    assert session_cookie("tok", secure=True) == (
        "keysat_session=tok; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=86400"
    )
    assert clearing_cookie(False) == "keysat_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    assert clearing_cookie(True) == (
        "keysat_session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"
    )


def session(**fields: object) -> WebSession:
    values: dict[str, object] = {
        "login_method": "password",
        "master_key_hash": None,
        "created_at": T0,
        "expires_at": T0 + timedelta(hours=24),
        "last_seen_at": T0,
    }
    values.update(fields)
    return WebSession(**values)


def test_the_idle_timeout_is_two_hours_after_the_last_use() -> None:
    row = session(last_seen_at=T0 + timedelta(hours=5))
    assert session_valid(row, T0 + timedelta(hours=7) - timedelta(microseconds=1), MASTER)
    assert not session_valid(row, T0 + timedelta(hours=7), MASTER)


def test_the_absolute_lifetime_ends_a_session_that_is_still_in_use() -> None:
    row = session(last_seen_at=T0 + timedelta(hours=23, minutes=59))
    assert session_valid(row, T0 + timedelta(hours=24) - timedelta(microseconds=1), MASTER)
    assert not session_valid(row, T0 + timedelta(hours=24), MASTER)


def test_a_master_key_session_ends_when_the_master_key_changes() -> None:
    by_key = session(login_method="api_key", master_key_hash=MASTER)
    assert session_valid(by_key, T0, MASTER)
    assert not session_valid(by_key, T0, "b" * 64)
    # A password session does not depend on the master key.
    assert session_valid(session(), T0, "b" * 64)


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("origin", "referer", "content_type", "host", "verdict"),
    [
        (PUBLIC, None, JSON, "internal:8080", "pass"),
        ("https://LICENSING.example.com:443", None, JSON, None, "pass"),
        ("https://evil.example", None, JSON, "licensing.example.com", "refuse"),
        ("http://licensing.example.com", None, JSON, None, "refuse"),
        ("https://licensing.example.com:8443", None, JSON, None, "refuse"),
        ("null", None, JSON, "licensing.example.com", "refuse"),
        ("not a url", None, JSON, "licensing.example.com", "refuse"),
        ("https://licensing.example.com/path", None, JSON, None, "refuse"),
        ("https://evil.example", PUBLIC + "/admin/", JSON, None, "refuse"),
        # The LAN address the operator typed: the Host header the request was sent to.
        ("http://192.168.1.5:8080", None, JSON, "192.168.1.5:8080", "pass"),
        ("http://192.168.1.5:8080", None, JSON, "192.168.1.5", "refuse"),
        ("http://192.168.1.5", None, JSON, "192.168.1.5", "pass"),
        ("https://box.lan", None, JSON, "box.lan:443", "pass"),
        ("http://[::1]:8080", None, JSON, "[::1]:8080", "pass"),
        ("http://box.lan", None, JSON, "box.lan:bad", "refuse"),
        (None, PUBLIC + "/admin/licenses?x=1", JSON, None, "pass"),
        (None, "https://evil.example/page", JSON, None, "refuse"),
        (None, "::garbage", JSON, None, "refuse"),
        (None, None, JSON, PUBLIC, "token"),
        (PUBLIC, None, FORM, None, "token"),
        (PUBLIC, None, "multipart/form-data; boundary=x", None, "token"),
        (PUBLIC, None, "Text/Plain; charset=utf-8", None, "token"),
        (PUBLIC, None, None, None, "pass"),
    ],
)
def test_csrf_verdicts(
    origin: str | None,
    referer: str | None,
    content_type: str | None,
    host: str | None,
    verdict: str,
) -> None:
    assert csrf_verdict(origin, referer, content_type, PUBLIC, host) == verdict


def test_the_csrf_field_is_found_in_a_multipart_form() -> None:
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="label"\r\n\r\n'
        b"hello\r\n"
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="csrf_token"\r\n\r\n'
        b"the-token\r\n"
        b"--XyZ--\r\n"
    )
    assert multipart_field("multipart/form-data; boundary=XyZ", body, "csrf_token") == "the-token"
    assert multipart_field("multipart/form-data; boundary=XyZ", body, "missing") is None
    assert multipart_field("multipart/form-data; boundary=other", body, "csrf_token") is None
