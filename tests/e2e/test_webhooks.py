"""Outgoing webhooks end to end: real `keysat serve` processes with their own delivery
workers, and a receiver on 127.0.0.1 that checks both signatures (webhooks.md 1, 5).

Done means: a receiver gets every event, signed, with no gap across a server restart.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from e2e.harness import KeysatServer, fresh_database, launch_server
from fakes.receiver import Delivery, WebhookReceiver

pytestmark = pytest.mark.e2e

# Long enough for a retry (5 s), the next tick (5 s) and a claim left by the stopped
# process (60 s), with room to spare on a slow machine.
DELIVERED_WITHIN_SECONDS = 120.0


def outbox(database_url: str) -> list[tuple[str, str]]:
    """Every recorded event (id, exact body), read straight from the database."""
    query = "SELECT id, payload_json FROM webhook_events"
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            return [(str(a), str(b)) for a, b in connection.execute(query).fetchall()]

    async def read() -> list[tuple[str, str]]:
        connection = await asyncpg.connect(database_url)
        try:
            return [(str(r[0]), str(r[1])) for r in await connection.fetch(query)]
        finally:
            await connection.close()

    return asyncio.run(read())


def make_events(server: KeysatServer, slug: str) -> None:
    """One of each event a licensing server emits without a payment provider."""
    server.create_product(slug)
    server.create_policy(slug, "pro", max_machines=3)
    issued = server.issue_license(slug, policy_slug="pro")
    machine = {"key": issued["license_key"], "fingerprint": f"{slug}-laptop"}
    for action in ("activate", "deactivate"):
        response = httpx.post(f"{server.base_url}/v1/machines/{action}", json=machine, timeout=15)
        assert response.status_code == 200 and response.json()["ok"] is True, response.text
    server.suspend(issued["license_id"], "paused")
    server.unsuspend(issued["license_id"])
    server.revoke(issued["license_id"], "refund")


def run_tick_when_idle(server: KeysatServer) -> None:
    """One manual tick, once the background one (if any) has finished: after it every
    answer the receiver gave has been recorded. The lease makes the call wait its turn."""
    deadline = time.monotonic() + 30
    while True:
        response = server.admin.post("/v1/admin/jobs/webhook_delivery/run")
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        assert response.status_code == 409, response.text
    assert response.status_code == 200, response.text


def accepted(received: list[Delivery]) -> dict[str, Delivery]:
    """The deliveries the receiver accepted (2xx after checking the signatures), by id."""
    return {item.id: item for item in received if 200 <= item.request.status < 300}


def test_a_receiver_gets_every_event_signed_across_a_restart(tmp_path: Path) -> None:
    with fresh_database(tmp_path / "db") as database_url, WebhookReceiver() as receiver:
        with launch_server(tmp_path / "first", database_url=database_url) as first:
            endpoint = first.admin_post("/v1/admin/webhook-endpoints", {"url": receiver.url})
            receiver.secret = endpoint["secret"]
            # The first answers fail, so the restart finds deliveries waiting for a retry.
            receiver.answer(503, 503, 503)
            make_events(first, "before")
            receiver.wait_for(4, timeout=30)
            waiting = first.admin.get(
                "/v1/admin/webhook-deliveries", params={"status": "pending"}
            ).json()["deliveries"]
            assert waiting, "the restart should find deliveries still to send"
        recorded_before = len(outbox(database_url))
        assert recorded_before == 7

        with launch_server(tmp_path / "second", database_url=database_url) as second:
            make_events(second, "after")
            events = outbox(database_url)
            assert len(events) == 14
            wanted = {body.encode() for _, body in events}
            received = receiver.wait_until(
                lambda got: {item.body for item in accepted(got).values()} >= wanted,
                timeout=DELIVERED_WITHIN_SECONDS,
            )
            run_tick_when_idle(second)
            listing = second.admin.get("/v1/admin/webhook-deliveries", params={"limit": 500})
            deliveries: list[dict[str, Any]] = listing.json()["deliveries"]

    assert len(deliveries) == 14
    assert all(entry["delivered_at"] is not None for entry in deliveries)
    assert {entry["id"] for entry in deliveries} == set(accepted(received))
    assert {entry["id"] for entry in waiting} <= set(accepted(received))
    for item in received:
        assert item.keysat_valid and item.standard_valid
        assert item.headers["webhook-id"] == item.headers["x-keysat-delivery"]
    # At least once: repeats carry the id of a delivery already seen, and nothing else.
    bodies_by_id = {entry["id"]: entry["payload_json"].encode() for entry in deliveries}
    assert all(bodies_by_id[item.id] == item.body for item in received)
    assert sum(1 for item in received if item.request.status == 503) == 3
