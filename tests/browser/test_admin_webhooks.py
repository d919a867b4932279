"""The Webhooks screen in a real browser (web.md 11.5.9): an operator adds an endpoint that
points at a real receiver on 127.0.0.1, copies its signing secret from the show-once page,
sees a license event delivered, then a failing receiver, a dead letter and a redelivery,
and deletes the endpoint with its history. Without JavaScript the same forms work.
"""

from __future__ import annotations

import ast
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from e2e.harness import KeysatServer
from fakes.receiver import WebhookReceiver, whsec
from keysat.webhooks.events import EVENT_NAMES, EVENT_TYPES

pytestmark = pytest.mark.browser

SOURCE = Path(__file__).resolve().parents[2] / "src" / "keysat"


class Receiver(WebhookReceiver):
    def answer_only(self, *behaviours: int | str) -> None:
        """Forget the answers still planned: the worker's own retries used an unknown number."""
        with self._lock:
            self._plan.clear()
            self._plan.extend(behaviours)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def run_delivery_job(keysat: KeysatServer) -> None:
    """One pass of the delivery worker, once the background pass (if any) has finished."""
    deadline = time.monotonic() + 30
    while True:
        response = keysat.admin.post("/v1/admin/jobs/webhook_delivery/run")
        if response.status_code != 409 or time.monotonic() > deadline:
            break
    assert response.status_code == 200, response.text


def issue_one(keysat: KeysatServer) -> str:
    slug = f"hook-{uuid.uuid4().hex[:8]}"
    keysat.create_product(slug)
    keysat.create_policy(slug, "std")
    return str(keysat.issue_license(slug, policy_slug="std")["license_id"])


def add_endpoint(page: Page, url: str, events: list[str], description: str = "Order system") -> str:
    """Fill and send the "Add an endpoint" form; returns the secret from the show-once page."""
    form = page.locator("#add-endpoint")
    if form.get_attribute("open") is None:
        form.locator("summary").click()
    page.fill("#f-url", url)
    page.fill("#f-description", description)
    if events != ["*"]:
        form.locator("input[value='*']").uncheck()
        for name in events:
            form.locator(f"input[value='{name}']").check()
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator("h1")).to_have_text("Endpoint added")
    return page.locator("#secret-value").inner_text().strip()


def delivery_row(page: Page, event: str) -> Locator:
    return page.locator("#deliveries tbody tr", has=page.locator("code", has_text=event))


def test_every_emitted_event_is_in_the_single_list_the_picker_shows() -> None:
    emitted: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "record_event"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                emitted.add(str(node.args[1].value))
    assert emitted == EVENT_NAMES
    assert len(EVENT_TYPES) == 16


def test_add_an_endpoint_see_a_delivery_and_its_payload(
    admin: Page,
    keysat: KeysatServer,
    receiver: Receiver,
    shoot: Callable[[Page, str], None],
) -> None:
    admin.goto("/admin/webhooks")
    if not keysat.admin.get("/v1/admin/webhook-endpoints").json()["endpoints"]:
        expect(admin.get_by_role("heading", name="No webhooks yet")).to_be_visible()
        shoot(admin, "admin-webhooks-empty")
        admin.get_by_role("link", name="Add your first webhook").click()
        expect(admin.locator("#f-url")).to_be_focused()
    picker = admin.locator(".event-grid input[type=checkbox]")
    assert [picker.nth(i).get_attribute("value") for i in range(picker.count())] == [
        name for name, _ in EVENT_TYPES
    ]
    shoot(admin, "admin-webhooks-add")

    # Operator text is plain text: markup in it must show as typed and never run.
    description = "Orders <img src=x onerror=alert(1)>"
    secret = add_endpoint(admin, receiver.url, ["license.issued"], description)
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    expect(admin.locator(".show-once")).to_contain_text(whsec(secret))
    shoot(admin, "admin-webhooks-secret")
    admin.get_by_role("button", name="Copy").click()
    admin.get_by_role("link", name="I've saved it — close").click()
    expect(admin).to_have_url(re.compile(r"/admin/webhooks$"))
    row = admin.locator("tr", has=admin.locator("code", has_text=receiver.url))
    expect(row).to_contain_text("license.issued")
    expect(row.locator(".pill")).to_have_text("Active")
    expect(row).to_contain_text("None yet")
    expect(row).to_contain_text(description)

    receiver.secret = secret
    license_id = issue_one(keysat)
    run_delivery_job(keysat)
    received = receiver.wait_for(1)
    assert received[0].keysat_valid and received[0].standard_valid

    admin.goto("/admin/webhooks")
    expect(row.locator("td").nth(3).locator(".pill")).to_have_text("Delivered")
    admin.select_option("#f-status", "delivered")
    admin.select_option("#f-endpoint", label=receiver.url)
    admin.get_by_role("button", name="Reload").click()
    expect(admin).to_have_url(re.compile(r"status=delivered&endpoint="))
    delivered = delivery_row(admin, "license.issued")
    expect(delivered).to_have_count(1)
    expect(delivered.locator(".pill")).to_have_text("Delivered")
    expect(delivered.locator("td").nth(5)).to_have_text("200")
    delivered.get_by_role("link", name="View payload").click()
    payload = admin.locator("#payload .payload-json")
    expect(payload).to_be_visible()
    expect(payload).to_contain_text(f'"license_id": "{license_id}"')
    expect(payload).to_contain_text('"event_type": "license.issued"')
    # A full-page shot paints the sticky bars where the page is scrolled to.
    admin.evaluate("window.scrollTo(0, 0)")
    shoot(admin, "admin-webhooks-delivered")

    admin.goto("/admin/webhooks")
    row.get_by_role("button", name="Delete").click()
    dialog = row.locator("dialog")
    expect(dialog).to_contain_text("Its whole delivery history is deleted with it")
    shoot(admin, "admin-webhooks-delete-confirm")
    dialog.get_by_role("button", name="Delete").click()
    expect(admin.locator(".notice")).to_have_text(
        "Endpoint deleted, with 1 delivery of its history."
    )
    expect(row).to_have_count(0)


def test_a_failing_receiver_a_dead_letter_and_a_redelivery(
    admin: Page,
    keysat: KeysatServer,
    receiver: Receiver,
    shoot: Callable[[Page, str], None],
) -> None:
    admin.goto("/admin/webhooks?new=1")
    receiver.secret = add_endpoint(admin, receiver.url, ["license.issued"])
    endpoint_id = next(
        e["id"]
        for e in keysat.admin.get("/v1/admin/webhook-endpoints").json()["endpoints"]
        if e["url"] == receiver.url
    )
    receiver.answer(500, 500, 500, 500)
    issue_one(keysat)
    run_delivery_job(keysat)
    receiver.wait_for(1)

    admin.goto(f"/admin/webhooks?status=pending&endpoint={endpoint_id}")
    failing = delivery_row(admin, "license.issued")
    expect(failing.locator(".pill")).to_have_text("Retrying")
    expect(failing).to_contain_text("non-2xx response: answer 500")
    expect(failing.locator("td").nth(5)).to_have_text("500")

    # Disabled, its queued delivery dead-letters on the next attempt: Redeliver makes that now.
    endpoint_row = admin.locator(f"#endpoint-{endpoint_id}")
    endpoint_row.get_by_role("button", name="Disable").click()
    expect(admin.locator(".notice")).to_contain_text("Endpoint disabled")
    expect(endpoint_row.locator(".pill").first).to_have_text("Disabled")
    admin.goto(f"/admin/webhooks?status=pending&endpoint={endpoint_id}")
    failing.get_by_role("button", name="Redeliver").click()
    run_delivery_job(keysat)

    admin.goto("/admin/webhooks")
    expect(admin.locator("#f-status")).to_have_value("failed")
    dead = delivery_row(admin, "license.issued").filter(has_text="endpoint deleted or disabled")
    expect(dead.locator(".pill")).to_have_text("Failed")
    shoot(admin, "admin-webhooks-failed")

    receiver.answer_only()
    endpoint_row.get_by_role("button", name="Enable").click()
    expect(endpoint_row.locator(".pill").first).to_have_text("Active")
    dead.get_by_role("button", name="Redeliver").click()
    expect(admin.locator(".notice")).to_have_text(
        "Delivery queued: it goes out within about five seconds."
    )
    expect(admin.locator("#f-status")).to_have_value("all")
    queued = admin.locator("#deliveries tbody tr.queued-row")
    # The background worker may already have sent it by the time the page renders.
    expect(queued.locator(".pill")).to_have_text(re.compile("Queued|Delivered"))
    admin.evaluate("window.scrollTo(0, 0)")
    shoot(admin, "admin-webhooks-queued")
    run_delivery_job(keysat)
    receiver.wait_until(lambda got: any(item.request.status == 200 for item in got))
    admin.reload()
    expect(queued.locator(".pill")).to_have_text("Delivered")

    keysat.admin.delete(f"/v1/admin/webhook-endpoints/{endpoint_id}")


def test_without_javascript_add_reveal_and_delete_an_endpoint(
    admin_nojs: Page, keysat: KeysatServer
) -> None:
    page = admin_nojs
    url = f"https://hooks.example/{uuid.uuid4().hex[:8]}"
    page.goto("/admin/webhooks?new=1")
    secret = add_endpoint(page, url, ["*"])
    assert secret in page.content()
    page.get_by_role("link", name="I've saved it — close").click()
    row = page.locator("tr", has=page.locator("code", has_text=url))
    expect(row).to_contain_text("All events")

    row.get_by_role("button", name="Reveal secret").click()
    expect(page.locator("h1")).to_have_text("Signing secret")
    expect(page.locator("#secret-value")).to_have_text(secret)
    page.get_by_role("link", name="I've saved it — close").click()

    row.get_by_role("button", name="Delete").click()
    expect(page.locator("h2")).to_have_text("Delete this endpoint?")
    page.get_by_role("button", name="Delete").click()
    expect(page.locator(".notice")).to_have_text(
        "Endpoint deleted, with 0 deliveries of its history."
    )
    assert all(
        e["url"] != url for e in keysat.admin.get("/v1/admin/webhook-endpoints").json()["endpoints"]
    )


def test_a_url_the_server_refuses_keeps_the_form_and_shows_its_message(admin: Page) -> None:
    admin.goto("/admin/webhooks?new=1")
    # The browser's own URL check lets port 0 through; the server does not.
    admin.fill("#f-url", "http://127.0.0.1:0/hooks")
    admin.fill("#f-description", "typed by hand")
    admin.locator("#add-endpoint input[value='license.revoked']").check()
    admin.get_by_role("button", name="Add endpoint").click()
    expect(admin.locator("[data-problem]")).to_contain_text("field 'url' must be an absolute")
    expect(admin.locator("#f-url-hint")).to_contain_text("field 'url' must be an absolute")
    expect(admin.locator("#f-description")).to_have_value("typed by hand")
    expect(admin.locator("#add-endpoint input[value='license.revoked']")).to_be_checked()
