"""ApiError and the `{ok, error, message}` envelope (public-api.md 1.4)."""

from __future__ import annotations

from typing import Any


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
