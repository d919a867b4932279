"""Wire conventions shared by every route: JSON bodies, timestamps, ids.

Bodies are parsed here rather than by the framework so that every body-level problem gets
the error envelope with the documented message (public-api.md 1.2), and so that
authentication (a route dependency declared before the body) always runs first.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from keysat.errors import bad_request

MAX_BODY_BYTES = 2 * 1024 * 1024
BODY_MODEL_ATTR = "__keysat_body_model__"
BODY_MEDIA_ATTR = "__keysat_body_media__"
BODY_ALTERNATIVES_ATTR = "__keysat_body_alternatives__"
BODY_OPTIONAL_ATTR = "__keysat_body_optional__"
ERRORS_ATTR = "__keysat_errors__"

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

_TYPE_WORDS = {
    "string_type": "string",
    "int_type": "integer",
    "int_from_float": "integer",
    "int_parsing": "integer",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
    "list_type": "array",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
}


def format_ts(value: datetime) -> str:
    """RFC 3339, UTC, `+00:00`, exactly six fractional digits."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def format_optional_ts(value: datetime | None) -> str | None:
    return None if value is None else format_ts(value)


def parse_ts(field: str, text: str) -> datetime:
    """Any RFC 3339 timestamp with an offset, normalized to UTC."""
    candidate = text.strip()
    if "T" not in candidate.upper() and candidate.count(" ") == 1:
        # RFC 3339 (section 5.6, note) lets a space separate the date and the time.
        candidate = candidate.replace(" ", "T")
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        if "T" not in candidate.upper():
            raise ValueError(text)
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise bad_request(f"field '{field}' must be an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise bad_request(f"field '{field}' must be an RFC 3339 timestamp with an offset")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is past the last representable instant
        raise bad_request(f"field '{field}' is out of range") from None


def normalize_id(value: str) -> str | None:
    """Accept hyphenated or 32-hex UUIDs; return the canonical form, or None."""
    try:
        return str(uuid.UUID(hex=value.strip()))
    except ValueError:
        return None


def new_id() -> str:
    return str(uuid.uuid4())


def _is_json_content_type(value: str | None) -> bool:
    if not value:
        return False
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise bad_request("request body exceeds 2 MiB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise bad_request("request body exceeds 2 MiB")
        chunks.append(chunk)
    return b"".join(chunks)


def validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"] if not isinstance(part, int)]
    name = loc[-1] if loc else "body"
    kind = first["type"]
    if kind == "missing":
        return f"missing field '{name}'"
    if kind in _TYPE_WORDS:
        # The wording of public-api.md 1.2, kept literally: clients may match on it.
        return f"field '{name}' must be a {_TYPE_WORDS[kind]}"
    if kind in ("string_too_long", "too_long"):
        limit = (first.get("ctx") or {}).get("max_length")
        unit = "characters" if kind == "string_too_long" else "items"
        return f"field '{name}' is too long (max {limit} {unit})"
    return f"field '{name}': {first['msg']}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # Python's parser turns 1e999 into inf, which could be stored but never sent back.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


async def parse_json_object(request: Request, *, allow_empty: bool) -> dict[str, Any]:
    raw = await read_body(request)
    if allow_empty and not raw.strip():
        return {}
    if not _is_json_content_type(request.headers.get("content-type")):
        raise bad_request("expected a JSON body (Content-Type: application/json)")
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad_request("invalid JSON body") from None
    if not isinstance(data, dict):
        raise bad_request("invalid JSON body")
    if _has_nul(data):
        raise bad_request("strings must not contain NUL characters")
    return data


def _has_nul(value: Any) -> bool:
    """PostgreSQL text cannot hold U+0000; refuse it up front on every database."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def validate_model(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise bad_request(validation_message(exc)) from None


async def parse_body(request: Request, model: type[M], *, allow_empty: bool = False) -> M:
    """Parse and validate a JSON object body inside a handler (no dependency machinery)."""
    return validate_model(model, await parse_json_object(request, allow_empty=allow_empty))


def documents_body(
    shape: type[BaseModel] | dict[str, Any],
    media_type: str = "application/json",
    *,
    optional: bool = False,
    alternatives: dict[str, dict[str, Any]] | None = None,
) -> Callable[[F], F]:
    """Name the body of a handler that parses its own, for the OpenAPI document: a model,
    or a plain JSON schema for a body no model describes (raw PEM text, a provider's
    webhook); `optional` when an absent body is accepted; `alternatives` maps other media
    types the handler accepts (an HTML form's post) to their schemas."""

    def mark(handler: F) -> F:
        setattr(handler, BODY_MODEL_ATTR, shape)
        setattr(handler, BODY_MEDIA_ATTR, media_type)
        setattr(handler, BODY_OPTIONAL_ATTR, optional)
        setattr(handler, BODY_ALTERNATIVES_ATTR, dict(alternatives or {}))
        return handler

    return mark


def documents_errors(
    *statuses: int, shapes: dict[int, type[BaseModel]] | None = None
) -> Callable[[F], F]:
    """Name the error statuses a handler answers beyond those the OpenAPI document infers
    (401 and 403 behind a gate, 400 with a body or a query, 404 with a path parameter).
    `shapes` adds a second body shape to a status (the self-license `license_invalid`)."""

    def mark(handler: F) -> F:
        setattr(handler, ERRORS_ATTR, (tuple(statuses), dict(shapes or {})))
        return handler

    return mark


def json_body(model: type[M], *, allow_empty: bool = False) -> Any:
    """A route dependency that parses and validates a JSON object body."""

    async def dependency(request: Request) -> M:
        return validate_model(model, await parse_json_object(request, allow_empty=allow_empty))

    setattr(dependency, BODY_MODEL_ATTR, model)
    setattr(dependency, BODY_OPTIONAL_ATTR, allow_empty)
    return Depends(dependency)


class StrictModel(BaseModel):
    """A request body: JSON types are never coerced, unknown fields are ignored
    (public-api.md 1.2)."""

    model_config = ConfigDict(strict=True, extra="ignore")


class OkResponse(BaseModel):
    """The `{"ok": true}` answer of state changes with nothing else to say."""

    ok: bool


def respond(content: Any) -> JSONResponse:
    """A JSON answer built by hand: skips the framework's slow re-serialisation."""
    return JSONResponse(content)


def query_bool(name: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise bad_request(f"query parameter '{name}' must be true or false")


def query_int(name: str, value: str | None, default: int, low: int, high: int) -> int:
    """Decimal integers; out-of-range values are clamped (admin-api.md 0.3)."""
    if value is None:
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise bad_request(f"query parameter '{name}' must be an integer") from None
    return min(max(number, low), high)


def query_required(name: str, value: str | None) -> str:
    if value is None:
        raise bad_request(f"missing query parameter '{name}'")
    return value
