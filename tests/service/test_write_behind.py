"""Write-behind of validate's bookkeeping, and the key-check cache."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from keysat.clock import now
from keysat.keys import (
    KeyFormatError,
    generate_private_key,
    private_key_to_pem,
    public_key_to_pem,
)
from keysat.licensing.jobs import ValidationRecord
from keysat.licensing.keyauth import KeyCheck
from support import create_product, issue_license, machines_of


async def test_heartbeat_refresh_skips_deactivated_and_never_moves_back(server: Any) -> None:
    await create_product(server)
    lic = await issue_license(server, max_machines=0)
    for fingerprint in ("a", "b"):
        response = await server.client.post(
            "/v1/machines/activate", json={"key": lic["license_key"], "fingerprint": fingerprint}
        )
        assert response.json()["ok"] is True
    machines = {m.fingerprint: m for m in await machines_of(server, lic["license_id"])}
    await server.client.post(
        "/v1/machines/deactivate", json={"key": lic["license_key"], "fingerprint": "b"}
    )
    writes = server.state.write_behind
    later = now() + timedelta(minutes=5)
    writes.machine_seen(machines["a"].id, later, "198.51.100.1")
    writes.machine_seen(machines["a"].id, later - timedelta(minutes=1), None)
    writes.machine_seen(machines["b"].id, later, "198.51.100.2")
    writes.record(ValidationRecord(None, None, None, None, "bad_format", "x", None, None, later))
    assert writes.pending == 3
    assert await writes.flush() == 3
    assert writes.pending == 0
    after = {m.fingerprint: m for m in await machines_of(server, lic["license_id"])}
    # The latest report of a machine wins and keeps the last known address.
    assert after["a"].last_heartbeat_at == later - timedelta(minutes=1)
    assert after["a"].ip_last_seen == "198.51.100.1"
    assert after["b"].last_heartbeat_at == machines["b"].last_heartbeat_at
    assert after["b"].ip_last_seen == machines["b"].ip_last_seen


def test_key_check_caches_within_its_bound(server: Any) -> None:
    checks = KeyCheck(size=2)
    with pytest.raises(KeyFormatError):
        checks.parse("LIC1-not-a-key")
    assert len(checks._parsed) == 0


async def test_key_check_remembers_signature_results_per_signing_key(server: Any) -> None:
    await create_product(server)
    lic = await issue_license(server)
    async with server.state.db.read() as session:
        issuer = await server.state.issuer_keys.current(session)
    other = server.state.issuer_keys.load(
        *_pems(generate_private_key()),
    )
    checks = KeyCheck(size=2)
    parsed = checks.parse(lic["license_key"])
    assert checks.verified(lic["license_key"], parsed, issuer) is True
    assert checks.verified(lic["license_key"], parsed, other) is False
    assert checks.verified(lic["license_key"], parsed, issuer) is True
    for text in ("x", "y", "z"):
        checks._remember(checks._parsed, text, parsed)
    assert len(checks._parsed) == 2


def _pems(private_key: Any) -> tuple[str, str]:
    return private_key_to_pem(private_key), public_key_to_pem(private_key.public_key())
