"""Scopes, roles and à-la-carte grants (access.md 4.2-4.4)."""

from __future__ import annotations

from typing import Any

import pytest

from keysat.access.scopes import (
    ROLES,
    SCOPES,
    ScopeError,
    granted_scopes,
    normalize_extra_scopes,
    parse_role,
    role_scopes,
    stored_extra_scopes,
)

READS = {
    "licenses:read",
    "products:read",
    "policies:read",
    "discount_codes:read",
    "machines:read",
    "subscriptions:read",
    "webhooks:read",
    "merchant_profiles:read",
    "payment_providers:read",
    "rates:read",
    "community:read",
    "settings:read",
    "tier:read",
    "audit:read",
}
WRITES = {
    "licenses:write",
    "products:write",
    "policies:write",
    "discount_codes:write",
    "machines:write",
    "subscriptions:write",
    "webhooks:write",
    "merchant_profiles:write",
    "payment_providers:write",
    "rates:write",
    "community:write",
}

# The write matrix of access.md 4.3, spelled out rather than derived.
EXPECTED = {
    "read-only": READS,
    "license-issuer": READS | {"licenses:write"},
    "support": READS | {"licenses:write", "subscriptions:write", "machines:write"},
    "merchant-onboard": READS | {"products:write", "policies:write", "licenses:write"},
    "full-admin": READS | (WRITES - {"payment_providers:write"}),
}


def test_the_scope_list_is_the_25_documented_strings() -> None:
    assert len(SCOPES) == 25
    assert set(SCOPES) == READS | WRITES
    assert len(set(SCOPES)) == 25


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_each_role_grants_exactly_its_documented_scopes(role: str) -> None:
    assert role_scopes(role) == EXPECTED[role]


def test_the_roles_are_the_five_names() -> None:
    assert ROLES == ("read-only", "license-issuer", "support", "merchant-onboard", "full-admin")
    assert role_scopes("Support") is None
    assert role_scopes("god-mode") is None


def test_payment_providers_write_reaches_a_key_only_as_an_extra_scope() -> None:
    assert all("payment_providers:write" not in EXPECTED[role] for role in ROLES)
    assert "payment_providers:write" in granted_scopes("read-only", ["payment_providers:write"])
    assert "payment_providers:write" not in granted_scopes("full-admin", None)


def test_roles_are_trimmed_and_unknown_roles_name_the_valid_ones() -> None:
    assert parse_role("  support ") == "support"
    with pytest.raises(ScopeError) as refused:
        parse_role("god-mode")
    assert str(refused.value) == (
        "role must be one of: read-only, license-issuer, support, merchant-onboard, full-admin"
    )


def test_extra_scopes_are_trimmed_deduplicated_and_sorted() -> None:
    entries = [" payment_providers:write", "", "  ", "payment_providers:write "]
    assert normalize_extra_scopes(entries) == ["payment_providers:write"]
    assert normalize_extra_scopes([]) == []
    assert normalize_extra_scopes(["", " "]) == []


@pytest.mark.parametrize("scope", ["billing:nuke", "licenses:write", "PAYMENT_PROVIDERS:WRITE"])
def test_extra_scopes_outside_the_allow_list_are_refused(scope: str) -> None:
    with pytest.raises(ScopeError) as refused:
        normalize_extra_scopes(["payment_providers:write", scope])
    assert f"'{scope}'" in str(refused.value)
    assert "payment_providers:write" in str(refused.value)


@pytest.mark.parametrize(
    "stored",
    [
        None,
        "payment_providers:write",
        {"payment_providers:write": True},
        [1],
        ["payment_providers:write", 2],
        [["payment_providers:write"]],
    ],
)
def test_a_malformed_stored_extra_scope_value_grants_nothing(stored: Any) -> None:
    assert stored_extra_scopes(stored) == frozenset()
    assert granted_scopes("read-only", stored) == EXPECTED["read-only"]


def test_a_stored_scope_outside_the_allow_list_is_never_granted() -> None:
    stored = ["billing:nuke", "webhooks:write", "payment_providers:write"]
    assert stored_extra_scopes(stored) == {"payment_providers:write"}


def test_an_unparsable_stored_role_grants_nothing_not_even_its_extra_scopes() -> None:
    assert granted_scopes("god-mode", ["payment_providers:write"]) == frozenset()
    assert granted_scopes("", None) == frozenset()
