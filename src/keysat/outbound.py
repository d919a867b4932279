"""Outbound JSON calls to payment providers and rate sources: one error type for every way
a call can fail."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import httpx

PROVIDER_TIMEOUT_SECONDS = 15.0
ERROR_BODY_MAX = 500


class UpstreamError(Exception):
    """A provider or rate source refused, failed or was unreachable. Never carries a
    secret: it holds the HTTP status and at most the first 500 characters of the answer."""

    def __init__(self, detail: str, status: int | None = None, body: str = "") -> None:
        self.detail = detail
        self.status = status
        self.body = body[:ERROR_BODY_MAX]
        text = detail
        if status is not None:
            text += f" (HTTP {status})"
        if self.body:
            text += f": {self.body}"
        super().__init__(text)


async def call_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    what: str,
    headers: Mapping[str, str],
    body: Any = None,
    accept_statuses: tuple[int, ...] = (),
    timeout_seconds: float = PROVIDER_TIMEOUT_SECONDS,
    decimals: bool = False,
) -> Any:
    """Send one request; return the decoded JSON answer (None for an empty body).

    Transport failures, timeouts, non-2xx answers (other than `accept_statuses`) and
    undecodable bodies all raise UpstreamError naming `what` was attempted. With
    `decimals`, JSON numbers with a fraction are read as Decimal, never as binary floats.
    """
    try:
        response = await client.request(
            method,
            url,
            headers=dict(headers),
            json=body if body is not None else None,
            timeout=timeout_seconds,
        )
    except httpx.TimeoutException:
        raise UpstreamError(f"{what}: timed out after {timeout_seconds:.0f} s") from None
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{what}: unreachable ({type(exc).__name__})") from None
    if response.status_code in accept_statuses:
        return None
    if not 200 <= response.status_code < 300:
        raise UpstreamError(what, status=response.status_code, body=response.text)
    if not response.content.strip():
        return None
    try:
        return json.loads(response.content, parse_float=Decimal if decimals else float)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UpstreamError(f"{what}: the answer is not JSON", body=response.text) from None


def as_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UpstreamError(f"{what}: expected a JSON object")
    return value


def string_field(data: Mapping[str, Any], name: str, what: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise UpstreamError(f"{what}: the answer has no '{name}'")
    return value
