"""The Machines screen in a real browser (web.md 11.5.5, 13): reached from a license, the
status pills and stats, and Deactivate through the reason dialog, with and without
JavaScript. Machines are activated through the public endpoint, as an app would."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from e2e.harness import KeysatServer

pytestmark = pytest.mark.browser


def _license_with_machines(keysat: KeysatServer, *hosts: tuple[str, str]) -> tuple[str, str]:
    """A license with one machine per (hostname, platform); returns its id and a tag."""
    tag = uuid.uuid4().hex[:8]
    slug = f"tool-{tag}"
    keysat.create_product(slug, name=f"Tool {tag}")
    issued = keysat.issue_license(slug, max_machines=5, buyer_email=f"m-{tag}@example.com")
    for hostname, platform in hosts:
        answer = keysat.admin.post(
            "/v1/machines/activate",
            json={
                "key": issued["license_key"],
                "fingerprint": f"fp-{hostname}-{tag}",
                "hostname": f"{hostname}-{tag}",
                "platform": platform,
            },
        )
        assert answer.json()["ok"] is True, answer.text
    return issued["license_id"], tag


def _machines(keysat: KeysatServer, license_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = keysat.admin.get(
        "/v1/admin/machines", params={"license_id": license_id, "include_inactive": "true"}
    ).json()["machines"]
    return rows


def _reason(keysat: KeysatServer, machine_id: str) -> str:
    entries = keysat.admin.get(
        "/v1/admin/audit", params={"target_kind": "machine", "target_id": machine_id}
    ).json()["entries"]
    (entry,) = [e for e in entries if e["action"] == "machine.deactivate"]
    return str(entry["details"]["reason"])


def test_deactivate_from_a_license_frees_the_seat(
    admin: Page, keysat: KeysatServer, shoot: Callable[[Page, str], None]
) -> None:
    license_id, tag = _license_with_machines(
        keysat, ("laptop", "macos"), ("desk", "linux"), ("build", "linux")
    )
    admin.goto(f"/admin/licenses/{license_id}")
    admin.locator(".license-head").get_by_role("link", name="Machines").click()
    expect(admin.locator("h1")).to_have_text(f"Machines on license {license_id[:8]}…")
    expect(admin.get_by_role("link", name="View all machines →")).to_be_visible()
    stats = admin.locator(".stats")
    expect(stats).to_contain_text("3 (100%)")
    expect(stats).to_contain_text("linux")
    expect(admin.locator("tbody tr")).to_have_count(3)
    shoot(admin, "admin-machines-list")

    row = admin.locator("tr", has_text=f"desk-{tag}")
    row.get_by_role("button", name="Deactivate").click()
    dialog = admin.locator("dialog[open]")
    dialog.get_by_label("Reason (optional, recorded in the audit log)").fill(f"stolen {tag}")
    dialog.get_by_role("button", name="Deactivate").click()
    expect(admin.locator(".notice")).to_contain_text("deactivated; its seat is free")
    expect(admin.locator("tbody tr")).to_have_count(2)
    expect(stats).to_contain_text("2 (67%)")

    machine = next(m for m in _machines(keysat, license_id) if m["hostname"] == f"desk-{tag}")
    assert machine["active"] is False
    assert machine["deactivation_reason"] == f"stolen {tag}"
    assert _reason(keysat, machine["id"]) == f"stolen {tag}"

    admin.get_by_role("link", name="Deactivated").click()
    expect(admin.locator("tbody tr")).to_have_count(1)
    expect(admin.locator("tbody tr")).to_contain_text(f"stolen {tag}")
    admin.get_by_role("link", name="View all machines →").click()
    expect(admin.locator("h1")).to_have_text("Machines")
    expect(admin.locator("tr", has_text=f"laptop-{tag}")).to_be_visible()


def test_deactivate_without_javascript_uses_the_confirmation_page(
    admin_nojs: Page, keysat: KeysatServer
) -> None:
    license_id, tag = _license_with_machines(keysat, ("server", "linux"))
    page = admin_nojs
    page.goto(f"/admin/licenses/{license_id}")
    machines = page.locator("section", has=page.get_by_role("heading", name="Machines"))
    machines.get_by_role("button", name="Deactivate").click()
    expect(page.locator("h1")).to_have_text("Deactivate this machine?")
    page.get_by_label("Reason (optional, recorded in the audit log)").fill(f"retired {tag}")
    page.get_by_role("button", name="Deactivate").click()
    expect(page).to_have_url(re.compile(f"/admin/licenses/{license_id}$"))
    expect(page.locator(".notice")).to_contain_text("deactivated")
    (machine,) = _machines(keysat, license_id)
    assert machine["active"] is False
    assert _reason(keysat, machine["id"]) == f"retired {tag}"
