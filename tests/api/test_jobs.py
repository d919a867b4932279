"""Background jobs: the admin view, manual runs, leases, and the reconciler's work
(billing.md 5, 9.1, 9.2; admin-api.md 19.3, 19.4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from keysat.billing.settlement import transition_allowed
from keysat.clock import clock
from keysat.operator.models import JobLease
from keysat.payments.models import SandboxInvoice
from support import (
    assert_error,
    audit_rows,
    create_product,
    invoice_row,
    licenses_for_invoice,
    poll,
    purchase,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
JOB_FIELDS = {
    "name",
    "interval_seconds",
    "last_started_at",
    "last_finished_at",
    "last_status",
    "last_error",
    "next_run_at",
    "running",
}


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        ("pending", "settled", True),
        ("pending", "expired", True),
        ("pending", "invalid", True),
        ("expired", "settled", True),
        ("invalid", "settled", True),
        ("settled", "expired", False),
        ("settled", "invalid", False),
        ("settled", "settled", False),
        ("expired", "invalid", False),
        ("invalid", "expired", False),
        ("expired", "expired", False),
    ],
)
def test_status_only_moves_forward(current: str, target: str, allowed: bool) -> None:
    assert transition_allowed(current, target) is allowed


async def run_job(server: Any, name: str) -> dict[str, Any]:
    response = await server.admin_post(f"/v1/admin/jobs/{name}/run")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_jobs_are_listed_in_the_spec_order_with_empty_history(server) -> None:  # type: ignore[no-untyped-def]
    response = await server.admin_get("/v1/admin/jobs")
    assert response.status_code == 200
    jobs = response.json()["jobs"]
    assert [job["name"] for job in jobs] == [
        "reconciler",
        "renewals",
        "webhook_delivery",
        "redemption_reaper",
        "session_reaper",
        "self_license_refresh",
        "community_heartbeat",
    ]
    assert [job["interval_seconds"] for job in jobs] == [60, 60, 5, 300, 3600, 3600, 86400]
    for job in jobs:
        assert set(job) == JOB_FIELDS
        assert job["last_started_at"] is None and job["last_status"] is None
        assert job["running"] is False
    assert response.headers["cache-control"] == "no-store"


async def test_run_answers_after_the_tick_and_audits(server) -> None:  # type: ignore[no-untyped-def]
    job = await run_job(server, "reconciler")
    assert job["name"] == "reconciler" and job["last_status"] == "ok"
    assert job["last_error"] is None and job["running"] is False
    started = datetime.fromisoformat(job["last_started_at"])
    finished = datetime.fromisoformat(job["last_finished_at"])
    assert started <= finished
    assert datetime.fromisoformat(job["next_run_at"]) == finished + timedelta(seconds=60)
    [audit] = await audit_rows(server, "job.run")
    assert (audit.target_kind, audit.target_id, audit.details) == ("job", "reconciler", {})


async def test_unknown_job_and_credentials(server) -> None:  # type: ignore[no-untyped-def]
    assert_error(
        await server.admin_post("/v1/admin/jobs/nope/run"),
        404,
        "not_found",
        "not found: job 'nope'",
    )
    assert (await server.client.post("/v1/admin/jobs/reconciler/run")).status_code == 401
    wrong = {"Authorization": "Bearer wrong-key-wrong-key-wrong-key-wrong"}
    assert (await server.client.get("/v1/admin/jobs", headers=wrong)).status_code == 403


async def test_a_job_held_by_another_process_is_409_and_shows_running(server) -> None:  # type: ignore[no-untyped-def]
    await server.admin_get("/v1/admin/jobs")
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(JobLease)
            .where(JobLease.name == "reconciler")
            .values(holder="other-host:1:abc", lease_until=clock.real_now() + timedelta(minutes=2))
        )
    assert_error(
        await server.admin_post("/v1/admin/jobs/reconciler/run"),
        409,
        "conflict",
        "conflict: job 'reconciler' is running",
    )
    jobs = {job["name"]: job for job in (await server.admin_get("/v1/admin/jobs")).json()["jobs"]}
    assert jobs["reconciler"]["running"] is True
    # An expired lease is free again: a crashed holder never blocks the job for good.
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(JobLease)
            .where(JobLease.name == "reconciler")
            .values(lease_until=clock.real_now() - timedelta(seconds=1))
        )
    assert (await run_job(server, "reconciler"))["last_status"] == "ok"


async def test_reconciler_settles_what_a_lost_event_would_have(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=1_000)
    bought = await purchase(sandbox, "acme")
    # The provider recorded the payment, but no event reached us.
    async with sandbox.state.db.write() as session:
        row = await session.get(SandboxInvoice, bought["btcpay_invoice_id"])
        assert row is not None
        row.status = "settled"
    assert (await poll(sandbox, bought["invoice_id"]))["status"] == "pending"
    await run_job(sandbox, "reconciler")
    assert (await poll(sandbox, bought["invoice_id"]))["status"] == "settled"
    assert len(await licenses_for_invoice(sandbox, bought["invoice_id"])) == 1
    # Running again changes nothing.
    await run_job(sandbox, "reconciler")
    assert len(await licenses_for_invoice(sandbox, bought["invoice_id"])) == 1


async def test_reconciler_expires_unpaid_sandbox_invoices_after_their_hour(sandbox) -> None:  # type: ignore[no-untyped-def]
    clock.freeze(T0)
    await create_product(sandbox, "acme", price_sats=1_000)
    bought = await purchase(sandbox, "acme")
    clock.advance(timedelta(minutes=59, seconds=59))
    await sandbox.state.jobs.job("reconciler").tick(clock.now())
    assert (await invoice_row(sandbox, bought["invoice_id"])).status == "pending"
    clock.advance(timedelta(seconds=1))
    await sandbox.state.jobs.job("reconciler").tick(clock.now())
    assert (await invoice_row(sandbox, bought["invoice_id"])).status == "expired"


async def test_reconciler_window_leaves_old_invoices_alone(sandbox) -> None:  # type: ignore[no-untyped-def]
    clock.freeze(T0)
    await create_product(sandbox, "acme", price_sats=1_000)
    old = await purchase(sandbox, "acme")
    async with sandbox.state.db.write() as session:
        row = await session.get(SandboxInvoice, old["btcpay_invoice_id"])
        assert row is not None
        row.status = "settled"
    clock.advance(timedelta(hours=72, seconds=1))
    recent = await purchase(sandbox, "acme")
    async with sandbox.state.db.write() as session:
        row = await session.get(SandboxInvoice, recent["btcpay_invoice_id"])
        assert row is not None
        row.status = "settled"
    await sandbox.state.jobs.job("reconciler").tick(clock.now())
    assert (await invoice_row(sandbox, old["invoice_id"])).status == "pending"
    assert (await invoice_row(sandbox, recent["invoice_id"])).status == "settled"


async def test_sandbox_invoices_are_skipped_once_sandbox_mode_is_off(make_server) -> None:  # type: ignore[no-untyped-def]
    sandbox = await make_server(KEYSAT_SANDBOX_MODE="true")
    await create_product(sandbox, "acme", price_sats=1_000)
    bought = await purchase(sandbox, "acme")
    async with sandbox.state.db.write() as session:
        row = await session.get(SandboxInvoice, bought["btcpay_invoice_id"])
        assert row is not None
        row.status = "settled"
    production = await make_server()
    await run_job(production, "reconciler")
    assert (await invoice_row(production, bought["invoice_id"])).status == "pending"
