"""ApiError and the `{ok, error, message}` envelope (public-api.md 1.4)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"ok": False, "error": self.code, "message": self.message, **self.extra}


class ErrorBody(BaseModel):
    """The error envelope of every 4xx and 5xx answer (public-api.md 1.4). Some answers add
    fields: `upgrade_url` on a 402, `detail` on a self-license `license_invalid`."""

    ok: Literal[False]
    error: str = Field(description="the error code; one per status, see the response")
    message: str = Field(description="for people; clients match on `error`, not on this")


class TierCapBody(ErrorBody):
    """The `402 tier_cap` answer of a capped admin action (access.md 9.3)."""

    error: Literal["tier_cap"]
    upgrade_url: str = Field(description="where to buy the tier that lifts the cap")


class LicenseInvalidBody(ErrorBody):
    """The `400 license_invalid` answer of a self-license activation (admin-api.md 18.3)."""

    error: Literal["license_invalid"]
    detail: str = Field(description="why the key was refused")


# The `error` codes each status carries (public-api.md 1.4, admin-api.md 0.5).
ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: ("bad_request",),
    401: ("unauthorized",),
    402: ("tier_cap",),
    403: ("forbidden",),
    404: ("not_found",),
    409: ("conflict",),
    429: ("rate_limited",),
    500: ("internal_error",),
    502: ("upstream_error",),
    503: ("btcpay_not_configured", "service_unavailable"),
}


def bad_request(detail: str) -> ApiError:
    return ApiError(400, "bad_request", f"bad request: {detail}")


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "unauthorized")


def forbidden() -> ApiError:
    return ApiError(403, "forbidden", "forbidden")


def not_found(detail: str) -> ApiError:
    return ApiError(404, "not_found", f"not found: {detail}")


def method_not_allowed(method: str, path: str) -> ApiError:
    return ApiError(405, "method_not_allowed", f"method not allowed: {method} {path}")


def conflict(detail: str) -> ApiError:
    return ApiError(409, "conflict", f"conflict: {detail}")


def rate_limited(detail: str, retry_after: int) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"too many requests: {detail}",
        headers={"Retry-After": str(max(retry_after, 1))},
    )


def service_unavailable(detail: str) -> ApiError:
    return ApiError(503, "service_unavailable", f"service unavailable: {detail}")


def internal_error(reference: str) -> ApiError:
    return ApiError(500, "internal_error", f"internal error (reference {reference})")
