"""Two `keysat serve` processes on one database run the renewal worker at the same moment:
every due subscription is invoiced once and lapses once (billing.md 6.4, 12.6 K3).

The sandbox clock's advance call runs a renewals tick in the answering process without
taking the job lease, so two simultaneous advances are two simultaneous ticks: only the
per-subscription claims and conditional updates keep the work single."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from keysat_licensing_client import StartPurchaseOptions

from e2e.harness import KeysatServer, launch_server
from e2e.test_payments import count_rows

pytestmark = pytest.mark.e2e

SUBSCRIBERS = 6
DAY = 86_400


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[tuple[KeysatServer, KeysatServer]]:
    env = {"KEYSAT_ENV": "development", "KEYSAT_WORKERS": "false"}
    with launch_server(tmp_path / "a", env) as first:
        with launch_server(tmp_path / "b", env, database_url=first.database_url) as second:
            yield first, second


def offset_of(server: KeysatServer) -> int:
    return int(server.admin.get("/v1/admin/sandbox/clock").json()["offset_seconds"])


def wait_for_offset(server: KeysatServer, expected: int) -> None:
    """Each process adopts the shared offset within a second; poll until this one has."""
    deadline = time.monotonic() + 10
    while offset_of(server) != expected:
        assert time.monotonic() < deadline, "the second process never saw the new offset"
        time.sleep(0.05)


def advance_together(servers: tuple[KeysatServer, ...], body: dict[str, int]) -> list[Any]:
    barrier = threading.Barrier(len(servers))
    answers: list[Any] = [None] * len(servers)

    def advance(index: int, server: KeysatServer) -> None:
        barrier.wait()
        answers[index] = server.admin.post("/v1/admin/sandbox/clock/advance", json=body)

    threads = [
        threading.Thread(target=advance, args=(index, server))
        for index, server in enumerate(servers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_two_processes_renew_and_lapse_each_subscription_once(
    twins: tuple[KeysatServer, KeysatServer],
) -> None:
    first, second = twins
    first.create_product("subs", price_sats=5_000)
    first.create_policy(
        "subs", "monthly", is_recurring=True, renewal_period_days=30, grace_period_days=7
    )
    sdk = first.sdk()
    for index in range(SUBSCRIBERS):
        session = sdk.start_purchase(
            "subs", StartPurchaseOptions(buyer_email=f"buyer{index}@example.com")
        )
        first.admin_post(f"/v1/admin/sandbox/invoices/{session.invoice_id}/pay")
    assert count_rows(first, "subscriptions", "WHERE status = 'active'") == SUBSCRIBERS

    first.admin_post("/v1/admin/sandbox/clock/advance", {"days": 29})
    wait_for_offset(second, 29 * DAY)

    answers = advance_together(twins, {"days": 1})
    assert [answer.status_code for answer in answers] == [200, 200]
    # The two advances add up: neither overwrote the other.
    wait_for_offset(first, 31 * DAY)
    assert count_rows(first, "invoices", "WHERE kind = 'renewal'") == SUBSCRIBERS
    pending = "WHERE event_type = 'subscription.renewal_pending'"
    assert count_rows(first, "webhook_events", pending) == SUBSCRIBERS
    assert count_rows(first, "subscriptions", "WHERE status = 'past_due'") == SUBSCRIBERS

    wait_for_offset(second, 31 * DAY)
    answers = advance_together(twins, {"days": 8})
    assert [answer.status_code for answer in answers] == [200, 200]
    assert count_rows(first, "subscriptions", "WHERE status = 'lapsed'") == SUBSCRIBERS
    lapsed = "WHERE event_type = 'subscription.lapsed'"
    assert count_rows(first, "webhook_events", lapsed) == SUBSCRIBERS
    # Lapsed subscriptions are never invoiced again.
    assert count_rows(first, "invoices", "WHERE kind = 'renewal'") == SUBSCRIBERS

    with httpx.Client(timeout=15.0) as client:
        invoices = client.get(
            f"{second.base_url}/v1/admin/invoices",
            params={"kind": "renewal"},
            headers=dict(second.admin.headers),
        ).json()["invoices"]
    assert len({invoice["subscription_id"] for invoice in invoices}) == SUBSCRIBERS
