"""Scopes, roles and à-la-carte grants (access.md 4.2-4.4): pure rules, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# The only scope strings the server checks, in the order of access.md 4.2.
SCOPES = (
    "licenses:read",
    "licenses:write",
    "products:read",
    "products:write",
    "policies:read",
    "policies:write",
    "discount_codes:read",
    "discount_codes:write",
    "machines:read",
    "machines:write",
    "subscriptions:read",
    "subscriptions:write",
    "webhooks:read",
    "webhooks:write",
    "merchant_profiles:read",
    "merchant_profiles:write",
    "payment_providers:read",
    "payment_providers:write",
    "rates:read",
    "rates:write",
    "community:read",
    "community:write",
    "settings:read",
    "tier:read",
    "audit:read",
)

# Grantable only through a key's extra scopes, never by a role.
A_LA_CARTE = frozenset({"payment_providers:write"})

READ_SCOPES = frozenset(scope for scope in SCOPES if scope.endswith(":read"))

# Each role is every `:read` scope plus an explicit list of writes, except full-admin,
# which is everything but the à-la-carte set (access.md 4.3).
ROLE_GRANTS: dict[str, frozenset[str]] = {
    "read-only": READ_SCOPES,
    "license-issuer": READ_SCOPES | {"licenses:write"},
    "support": READ_SCOPES | {"licenses:write", "subscriptions:write", "machines:write"},
    "merchant-onboard": READ_SCOPES | {"products:write", "policies:write", "licenses:write"},
    "full-admin": frozenset(SCOPES) - A_LA_CARTE,
}
ROLES = tuple(ROLE_GRANTS)


class ScopeError(ValueError):
    """A create request names a role or an extra scope the server does not grant."""


def role_scopes(role: str) -> frozenset[str] | None:
    """The scopes a stored role grants; None for a role that is not one of the five."""
    return ROLE_GRANTS.get(role)


def parse_role(text: str) -> str:
    role = text.strip()
    if role not in ROLE_GRANTS:
        raise ScopeError(f"role must be one of: {', '.join(ROLES)}")
    return role


def normalize_extra_scopes(entries: Iterable[str]) -> list[str]:
    """Trim, drop empties, sort and deduplicate; refuse anything outside the allow-list."""
    scopes = sorted({entry.strip() for entry in entries if entry.strip()})
    refused = [scope for scope in scopes if scope not in A_LA_CARTE]
    if refused:
        raise ScopeError(
            f"scope '{refused[0]}' cannot be granted; extra scopes may only be: "
            f"{', '.join(sorted(A_LA_CARTE))}"
        )
    return scopes


def stored_extra_scopes(value: Any) -> frozenset[str]:
    """Read a stored `extra_scopes` value, failing closed: anything but a list of allowed
    strings grants nothing (access.md 4.4), so a hand-edited row cannot widen a key."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return frozenset()
    return frozenset(item for item in value if item in A_LA_CARTE)


def granted_scopes(role: str, extra_scopes: Any) -> frozenset[str]:
    """Everything a key may do; nothing at all when its stored role is unparsable."""
    by_role = role_scopes(role)
    if by_role is None:
        return frozenset()
    return by_role | stored_extra_scopes(extra_scopes)
