"""The delivery worker against a real receiver on 127.0.0.1 that checks both signatures
(webhooks.md 5, 7): every event the existing code paths emit, outcomes, the retry schedule
and dead letter with time moved (never slept), redelivery, and claims that keep two workers
from sending one attempt twice.

Delivery runs on the system clock, which tests cannot freeze, so the worker's `tick(at)` is
handed the time to run at: due times are read from the rows and the tick is run exactly then.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from fakes.receiver import CLOSE, HANG, WebhookReceiver, standard_webhooks_verify, whsec
from keysat import __version__
from keysat.clock import clock
from keysat.webhooks.jobs import DeliveryWorker
from keysat.webhooks.models import WebhookDelivery, WebhookEvent
from keysat.webhooks.service import record_event
from support import (
    audit_rows,
    create_policy,
    create_product,
    issue_license,
    purchase,
    sandbox_action,
)

ENDPOINTS = "/v1/admin/webhook-endpoints"
DELIVERIES = "/v1/admin/webhook-deliveries"
# webhooks.md 3: the sixteen names, whichever domain records them.
CATALOGUE = (
    "product.created",
    "license.issued",
    "license.revoked",
    "license.suspended",
    "license.unsuspended",
    "license.tier_changed",
    "machine.activated",
    "machine.deactivated",
    "code.redeemed",
    "subscription.renewal_pending",
    "subscription.renewal_skipped",
    "subscription.auto_charge_initiated",
    "subscription.auto_charge_failed",
    "subscription.renewed",
    "subscription.lapsed",
    "subscription.cancelled",
)
EMITTED_TODAY = {
    "product.created",
    "license.issued",
    "license.revoked",
    "license.suspended",
    "license.unsuspended",
    "machine.activated",
    "machine.deactivated",
    "code.redeemed",
}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


async def subscribe(server: Any, receiver: WebhookReceiver, **body: Any) -> dict[str, Any]:
    response = await server.admin_post(ENDPOINTS, {"url": receiver.url, **body})
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    receiver.secret = created["secret"]
    return created


async def run_job(server: Any) -> None:
    response = await server.admin_post("/v1/admin/jobs/webhook_delivery/run")
    assert response.status_code == 200, response.text
    assert response.json()["last_status"] == "ok"


def worker(server: Any, timeout_seconds: float = 10.0) -> DeliveryWorker:
    """A worker of the server's own kind on its database, to tick at a chosen time."""
    return DeliveryWorker(server.state.db, server.state.http, timeout_seconds=timeout_seconds)


async def rows(server: Any) -> list[WebhookDelivery]:
    async with server.state.db.read() as session:
        query = sa.select(WebhookDelivery).order_by(WebhookDelivery.created_at)
        return list((await session.execute(query)).scalars())


async def row(server: Any, delivery_id: str) -> WebhookDelivery:
    async with server.state.db.read() as session:
        found = await session.get(WebhookDelivery, delivery_id)
    assert found is not None
    return found


async def outbox(server: Any) -> list[WebhookEvent]:
    async with server.state.db.read() as session:
        return list((await session.execute(sa.select(WebhookEvent))).scalars())


async def listed(server: Any, status: str) -> list[str]:
    response = await server.admin_get(DELIVERIES, status=status)
    assert response.status_code == 200
    return [entry["id"] for entry in response.json()["deliveries"]]


def due(delivery: WebhookDelivery) -> datetime:
    assert delivery.next_attempt_at is not None
    return delivery.next_attempt_at


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def one_product_event(server: Any, receiver: WebhookReceiver) -> WebhookDelivery:
    await subscribe(server, receiver)
    await create_product(server, "acme")
    [delivery] = await rows(server)
    return delivery


# --- every event, signed ------------------------------------------------------------------


async def machine_call(server: Any, action: str, key: str, fingerprint: str) -> dict[str, Any]:
    response = await server.client.post(
        f"/v1/machines/{action}", json={"key": key, "fingerprint": fingerprint}
    )
    assert response.status_code == 200 and response.json()["ok"] is True, response.text
    return dict(response.json())


async def test_every_event_of_the_existing_code_paths_arrives_signed(
    sandbox: Any, receiver: WebhookReceiver
) -> None:
    endpoint = await subscribe(sandbox, receiver)
    product = await create_product(sandbox, "acme", price_sats=10_000)
    await create_policy(sandbox, "acme", "pro", max_machines=5)
    by_hand = await issue_license(sandbox, "acme", policy_slug="pro")
    key = by_hand["license_key"]
    await machine_call(sandbox, "activate", key, "fp-activate")
    await machine_call(sandbox, "deactivate", key, "fp-activate")
    validated = await sandbox.client.post(
        "/v1/validate", json={"key": key, "fingerprint": "fp-validate"}
    )
    assert validated.json()["ok"] is True, validated.text
    machine_id = validated.json()["machine_id"]
    response = await sandbox.admin_post(f"/v1/admin/machines/{machine_id}/deactivate")
    assert response.status_code == 200, response.text
    for action in ("suspend", "unsuspend", "revoke"):
        response = await sandbox.admin_post(
            f"/v1/admin/licenses/{by_hand['license_id']}/{action}", {}
        )
        assert response.status_code == 200, response.text
    bought = await purchase(sandbox, "acme", policy_slug="pro")
    await sandbox_action(sandbox, bought["invoice_id"], "pay")
    response = await sandbox.admin_post(
        "/v1/admin/discount-codes", {"code": "hooked", "kind": "percent", "amount": 1_000}
    )
    assert response.status_code == 200, response.text
    discounted = await purchase(sandbox, "acme", policy_slug="pro", code="HOOKED")
    await sandbox_action(sandbox, discounted["invoice_id"], "pay")

    await run_job(sandbox)

    events = await outbox(sandbox)
    received = receiver.deliveries
    assert {event.event_type for event in events} == EMITTED_TODAY
    assert len(received) == len(events) == 12
    queued = {delivery.id: delivery for delivery in await rows(sandbox)}
    bodies = sorted(event.payload_json.encode() for event in events)
    assert sorted(item.body for item in received) == bodies
    now = time.time()
    for item in received:
        assert item.keysat_valid and item.standard_valid
        standard_webhooks_verify(whsec(receiver.secret), item.headers, item.body, now=now)
        envelope = item.json()
        delivery = queued[item.id]
        assert item.request.method == "POST" and item.request.path == "/hooks"
        assert item.headers["x-keysat-event"] == envelope["event_type"] == delivery.event_type
        assert item.headers["webhook-id"] == item.headers["x-keysat-delivery"] == delivery.id
        assert item.headers["content-type"] == "application/json"
        assert item.headers["user-agent"] == f"Keysat/{__version__}"
        assert item.headers["webhook-timestamp"].isdigit()
        assert item.body == delivery.payload_json.encode()
        assert delivery.endpoint_id == endpoint["id"]
        assert (delivery.attempt_count, delivery.last_status_code) == (1, 200)
        assert delivery.delivered_at is not None and delivery.next_attempt_at is None
        assert delivery.last_error is None

    by_type: dict[str, list[dict[str, Any]]] = {}
    for item in received:
        by_type.setdefault(item.headers["x-keysat-event"], []).append(item.json()["data"])
    assert by_type["product.created"] == [{"product": product}]
    assert sorted(data["source"] for data in by_type["license.issued"]) == [
        "admin_issue",
        "purchase",
        "purchase",
    ]
    assert sorted(data["reason"] for data in by_type["machine.deactivated"]) == [
        "admin deactivate",
        "client_requested",
    ]
    assert len(by_type["machine.activated"]) == 2
    [redeemed] = by_type["code.redeemed"]
    assert (redeemed["code"], redeemed["invoice_id"]) == ("HOOKED", discounted["invoice_id"])
    assert await listed(sandbox, "delivered") != [] and await listed(sandbox, "pending") == []


async def test_any_recorded_event_is_delivered_without_help_from_its_domain(
    make_server: Any,
) -> None:
    """Every name of the catalogue, recorded the one way every domain records events."""
    server = await make_server()
    with WebhookReceiver() as everything, WebhookReceiver() as renewals:
        await subscribe(server, everything)
        await subscribe(server, renewals, event_types=["subscription.renewed"])
        for number, name in enumerate(CATALOGUE):
            async with server.state.db.write() as session:
                record_event(session, name, {"n": number, "note": "naïve ✓"})
        await run_job(server)
        got = everything.deliveries
        assert sorted(item.headers["x-keysat-event"] for item in got) == sorted(CATALOGUE)
        assert all(item.keysat_valid and item.standard_valid for item in got)
        for item in got:
            assert item.json()["event_type"] == item.headers["x-keysat-event"]
            assert "naïve ✓".encode() in item.body  # UTF-8 as is, never \u escapes
        [renewed] = renewals.deliveries
        assert renewed.json()["data"]["n"] == CATALOGUE.index("subscription.renewed")
        assert renewed.keysat_valid and renewed.standard_valid


async def test_an_endpoint_gets_only_the_events_it_subscribed_to(
    server: Any, receiver: WebhookReceiver
) -> None:
    await subscribe(server, receiver, event_types=["license.issued"])
    await create_product(server, "acme")
    license_ = await issue_license(server, "acme")
    await machine_call(server, "activate", license_["license_key"], "fp-1")
    await run_job(server)
    [item] = receiver.deliveries
    assert item.headers["x-keysat-event"] == "license.issued"
    assert item.json()["data"]["license_id"] == license_["license_id"]
    assert item.keysat_valid and item.standard_valid


async def test_a_wrong_secret_is_refused_by_the_receiver_and_retried(
    server: Any, receiver: WebhookReceiver
) -> None:
    delivery = await one_product_event(server, receiver)
    receiver.secret = "not-the-endpoint-secret"
    await run_job(server)
    [item] = receiver.deliveries
    assert not item.keysat_valid and not item.standard_valid
    refused = await row(server, delivery.id)
    assert (refused.attempt_count, refused.last_status_code) == (1, 401)
    assert refused.delivered_at is None


# --- outcomes (webhooks.md 5.4, 7) --------------------------------------------------------


async def test_a_500_is_retried_five_seconds_later(server: Any, receiver: WebhookReceiver) -> None:
    delivery = await one_product_event(server, receiver)
    receiver.answer(500)
    at = due(delivery) + timedelta(seconds=1)
    assert await worker(server).tick(at) == 1
    failed = await row(server, delivery.id)
    assert failed.attempt_count == 1 and failed.last_status_code == 500
    assert failed.next_attempt_at == at + timedelta(seconds=5)
    assert failed.last_error is not None and failed.last_error.startswith("non-2xx response: ")
    assert failed.last_error == "non-2xx response: " + "answer 500".ljust(100)
    assert failed.delivered_at is None
    assert await listed(server, "pending") == [delivery.id]

    assert await worker(server).tick(at + timedelta(seconds=5) - timedelta(microseconds=1)) == 0
    assert await worker(server).tick(at + timedelta(seconds=5)) == 1
    done = await row(server, delivery.id)
    assert (done.attempt_count, done.last_status_code, done.last_error) == (2, 200, None)
    assert done.delivered_at == at + timedelta(seconds=5) and done.next_attempt_at is None
    first, second = receiver.deliveries
    assert first.id == second.id == delivery.id and first.body == second.body
    assert first.headers["x-keysat-signature"] == second.headers["x-keysat-signature"]
    assert int(second.headers["webhook-timestamp"]) == int(first.headers["webhook-timestamp"]) + 5


async def test_the_full_schedule_ends_in_a_dead_letter_after_ten_attempts(
    server: Any, receiver: WebhookReceiver
) -> None:
    delivery = await one_product_event(server, receiver)
    receiver.answer(*[503] * 10)
    at = due(delivery)
    started = at
    for attempt in range(1, 11):
        assert await worker(server).tick(at - timedelta(microseconds=1)) == 0
        assert await worker(server).tick(at) == 1
        current = await row(server, delivery.id)
        assert current.attempt_count == attempt and current.last_status_code == 503
        if attempt < 10:
            at = due(current)
    assert at - started == timedelta(seconds=13_905)
    dead = await row(server, delivery.id)
    assert dead.next_attempt_at is None and dead.delivered_at is None
    assert await worker(server).tick(at + timedelta(days=365)) == 0
    assert await listed(server, "failed") == [delivery.id]
    received = receiver.deliveries
    assert len(received) == 10 and {item.id for item in received} == {delivery.id}
    stamps = [int(item.headers["webhook-timestamp"]) for item in received]
    assert [b - a for a, b in itertools.pairwise(stamps)] == [
        5,
        10,
        30,
        60,
        300,
        900,
        1800,
        3600,
        7200,
    ]


async def test_a_preset_ninth_failure_then_a_500_is_a_dead_letter(
    server: Any, receiver: WebhookReceiver
) -> None:
    delivery = await one_product_event(server, receiver)
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery.id)
            .values(attempt_count=9)
        )
    receiver.answer(500)
    await run_job(server)
    dead = await row(server, delivery.id)
    assert (dead.attempt_count, dead.next_attempt_at, dead.last_status_code) == (10, None, 500)
    assert await listed(server, "failed") == [delivery.id]


async def test_an_unreachable_receiver_is_a_request_error(
    server: Any, receiver: WebhookReceiver
) -> None:
    receiver.url = f"http://127.0.0.1:{closed_port()}/hooks"
    delivery = await one_product_event(server, receiver)
    at = due(delivery)
    assert await worker(server).tick(at) == 1
    failed = await row(server, delivery.id)
    assert failed.last_status_code is None and failed.attempt_count == 1
    assert failed.last_error is not None and failed.last_error.startswith("request error: ")
    assert "ConnectError" in failed.last_error
    assert failed.next_attempt_at == at + timedelta(seconds=5)


async def test_a_hanging_receiver_times_out(server: Any, receiver: WebhookReceiver) -> None:
    delivery = await one_product_event(server, receiver)
    receiver.answer(HANG)
    at = due(delivery)
    assert await worker(server, timeout_seconds=0.3).tick(at) == 1
    failed = await row(server, delivery.id)
    assert failed.last_error == "request error: timed out after 0.3 s"
    assert failed.last_status_code is None and failed.next_attempt_at == at + timedelta(seconds=5)


async def test_a_connection_closed_mid_answer_is_a_request_error(
    server: Any, receiver: WebhookReceiver
) -> None:
    delivery = await one_product_event(server, receiver)
    receiver.answer(CLOSE)
    assert await worker(server).tick(due(delivery)) == 1
    failed = await row(server, delivery.id)
    assert failed.delivered_at is None and failed.last_status_code is None
    assert failed.last_error is not None and failed.last_error.startswith("request error: ")
    assert len(receiver.deliveries) == 1


async def test_a_redirect_is_not_followed_and_fails(server: Any, receiver: WebhookReceiver) -> None:
    delivery = await one_product_event(server, receiver)
    receiver.answer(307)
    await run_job(server)
    failed = await row(server, delivery.id)
    assert failed.last_status_code == 307 and failed.delivered_at is None
    assert len(receiver.deliveries) == 1


async def test_a_disabled_endpoint_dead_letters_without_a_request(
    server: Any, receiver: WebhookReceiver
) -> None:
    endpoint = await subscribe(server, receiver)
    await create_product(server, "acme")
    [delivery] = await rows(server)
    response = await server.admin_patch(f"{ENDPOINTS}/{endpoint['id']}/active", {"active": False})
    assert response.status_code == 200
    await run_job(server)
    dead = await row(server, delivery.id)
    assert (dead.attempt_count, dead.last_status_code, dead.last_error) == (
        1,
        None,
        "endpoint deleted or disabled",
    )
    assert dead.next_attempt_at is None and dead.delivered_at is None
    assert receiver.deliveries == []
    assert await listed(server, "failed") == [delivery.id]

    # Re-enabling does not revive the dead letter; a retry does.
    await server.admin_patch(f"{ENDPOINTS}/{endpoint['id']}/active", {"active": True})
    await run_job(server)
    assert receiver.deliveries == [] and await listed(server, "failed") == [delivery.id]
    response = await server.admin_post(f"{DELIVERIES}/{delivery.id}/retry")
    assert response.status_code == 200 and response.json()["attempt_count"] == 0
    assert await listed(server, "pending") == [delivery.id]
    await run_job(server)
    [item] = receiver.deliveries
    assert item.id == delivery.id and item.body == delivery.payload_json.encode()
    assert (await row(server, delivery.id)).delivered_at is not None


async def test_retry_of_a_dead_letter_sends_the_same_delivery_again(
    server: Any, receiver: WebhookReceiver
) -> None:
    delivery = await one_product_event(server, receiver)
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery.id)
            .values(attempt_count=9)
        )
    receiver.answer(500)
    at = due(delivery)
    await worker(server).tick(at)
    assert await listed(server, "failed") == [delivery.id]

    response = await server.admin_post(f"{DELIVERIES}/{delivery.id}/retry")
    assert response.status_code == 200
    requeued = await row(server, delivery.id)
    assert requeued.attempt_count == 0 and await listed(server, "pending") == [delivery.id]
    later = due(requeued) + timedelta(seconds=1)
    await worker(server).tick(later)
    first, second = receiver.deliveries
    assert second.id == first.id == delivery.id and second.body == first.body
    assert second.headers["webhook-timestamp"] == str(int(later.timestamp()))
    assert second.headers["webhook-timestamp"] != first.headers["webhook-timestamp"]
    assert second.keysat_valid and second.standard_valid
    done = await row(server, delivery.id)
    assert (done.attempt_count, done.last_status_code) == (1, 200)
    [audit] = await audit_rows(server, "webhook_delivery.retry")
    assert audit.target_id == delivery.id


# --- claims: one attempt, one sender ------------------------------------------------------


async def test_two_servers_on_one_database_never_send_an_attempt_twice(
    make_server: Any, receiver: WebhookReceiver
) -> None:
    first = await make_server()
    second = await make_server()
    await subscribe(first, receiver)
    await create_product(second, "acme")
    for _ in range(29):
        await issue_license(second, "acme")
    queued = await rows(first)
    assert len(queued) == 30
    at = max(due(delivery) for delivery in queued)
    sent = await asyncio.gather(
        worker(first).tick(at),
        worker(second).tick(at),
        worker(first).tick(at),
        worker(second).tick(at),
    )
    assert sum(sent) == 30
    received = receiver.deliveries
    assert len(received) == 30
    assert sorted(item.id for item in received) == sorted(delivery.id for delivery in queued)
    assert all(item.keysat_valid and item.standard_valid for item in received)
    assert await listed(first, "delivered") and await listed(second, "pending") == []


async def test_a_worker_that_dies_mid_attempt_leaves_the_row_for_after_its_claim(
    server: Any, receiver: WebhookReceiver
) -> None:
    delivery = await one_product_event(server, receiver)
    receiver.answer(HANG)
    at = due(delivery)
    dying = asyncio.create_task(worker(server).tick(at))
    await asyncio.to_thread(receiver.wait_for, 1)
    dying.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await dying
    receiver.release()
    claimed = await row(server, delivery.id)
    assert claimed.attempt_count == 0 and claimed.next_attempt_at == at + timedelta(seconds=60)

    assert await worker(server).tick(at + timedelta(seconds=59)) == 0
    assert await worker(server).tick(at + timedelta(seconds=60)) == 1
    done = await row(server, delivery.id)
    assert (done.attempt_count, done.last_status_code) == (1, 200)
    # At least once: the receiver saw the delivery twice, with one id to de-duplicate on.
    assert [item.id for item in receiver.deliveries] == [delivery.id, delivery.id]


async def test_an_attempt_never_overwrites_a_retry_or_a_delete_made_meanwhile(
    server: Any, receiver: WebhookReceiver
) -> None:
    endpoint = await subscribe(server, receiver)
    await create_product(server, "acme")
    [delivery] = await rows(server)
    receiver.answer(HANG)
    at = due(delivery)
    attempt = asyncio.create_task(worker(server, timeout_seconds=30).tick(at))
    await asyncio.to_thread(receiver.wait_for, 1)
    response = await server.admin_post(f"{DELIVERIES}/{delivery.id}/retry")
    assert response.status_code == 200
    receiver.release()
    assert await attempt == 1
    requeued = await row(server, delivery.id)
    assert requeued.attempt_count == 0 and requeued.delivered_at is None
    assert await listed(server, "pending") == [delivery.id]

    receiver.answer(HANG)
    receiver_gate = asyncio.create_task(worker(server, timeout_seconds=30).tick(due(requeued)))
    await asyncio.to_thread(receiver.wait_for, 2)
    response = await server.admin_delete(f"{ENDPOINTS}/{endpoint['id']}")
    assert response.json() == {"ok": True, "cascaded_deliveries": 1}
    assert await receiver_gate == 1
    assert await rows(server) == []


# --- secrets ------------------------------------------------------------------------------


async def test_secrets_never_reach_the_logs(
    server: Any, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("keysat", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    delivery = await one_product_event(server, receiver)
    receiver.answer(500, CLOSE)
    at = due(delivery)
    await worker(server).tick(at)
    await worker(server).tick(at + timedelta(seconds=5))
    assert (await row(server, delivery.id)).attempt_count == 2
    assert "webhook delivery" in caplog.text
    assert receiver.secret not in caplog.text
    for item in receiver.deliveries:
        assert receiver.secret not in json.dumps(item.headers)


async def test_scheduling_ignores_the_business_clock(
    server: Any, receiver: WebhookReceiver
) -> None:
    delivery = await one_product_event(server, receiver)
    receiver.answer(500)
    await run_job(server)
    failed = await row(server, delivery.id)
    assert failed.attempt_count == 1
    # Moving the business clock (as the sandbox test clock does) makes nothing due early.
    clock.advance(timedelta(days=1))
    await run_job(server)
    assert (await row(server, delivery.id)).attempt_count == 1
    assert len(receiver.deliveries) == 1
