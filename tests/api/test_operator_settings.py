"""Operator settings: the operator name and community analytics (admin-api.md 15), and the
community heartbeat job against a local collector (billing.md 10, examples H1 and H2)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fakes.btcpay import FakeBTCPay
from fakes.collector import FakeCollector
from keysat import __version__
from keysat.operator.community import (
    CommunityHeartbeat,
    HeartbeatFailed,
    rounded_down,
    uptime_bucket,
)
from keysat.operator.service import get_setting, put_setting
from support import (
    add_invoice,
    add_license,
    assert_error,
    audit_rows,
    connect_btcpay_row,
    create_product,
    issue_license,
    self_license_key,
)

NAME = "/v1/admin/settings/operator-name"
COMMUNITY = "/v1/admin/community-analytics"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
T0 = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
DAY = timedelta(seconds=86_400)


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    with FakeCollector() as fake:
        yield fake


async def setting(server: Any, key: str) -> str | None:
    async with server.state.db.read() as session:
        return await get_setting(session, key)


async def opt_in(server: Any, url: str | None) -> dict[str, Any]:
    response = await server.admin_post(COMMUNITY, {"enabled": True, "collector_url": url})
    assert response.status_code == 200, response.text
    return dict(response.json())


def heartbeat(server: Any, started_at: datetime) -> CommunityHeartbeat:
    """A heartbeat sender for the server's database, as a process started at `started_at`."""
    state = server.state
    return CommunityHeartbeat(state.db, state.http, state.self_license, started_at=started_at)


# --- operator name -------------------------------------------------------------------------


async def test_operator_name_falls_back_to_the_environment(make_server: Any) -> None:
    server = await make_server(KEYSAT_OPERATOR_NAME="Env Co")
    response = await server.admin_get(NAME)
    assert response.status_code == 200
    assert response.json() == {"stored": None, "effective": "Env Co", "fallback_env": "Env Co"}

    response = await server.admin_post(NAME, {"name": "  Acme  "})
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "operator_name": "Acme"}
    assert (await server.admin_get(NAME)).json() == {
        "stored": "Acme",
        "effective": "Acme",
        "fallback_env": "Env Co",
    }
    service = await server.client.get("/", headers={"Accept": "application/json"})
    assert service.json()["operator"] == "Acme"

    response = await server.admin_post(NAME, {"name": "   "})
    assert response.json() == {"ok": True, "operator_name": None}
    assert (await server.admin_get(NAME)).json() == {
        "stored": None,
        "effective": "Env Co",
        "fallback_env": "Env Co",
    }
    audits = await audit_rows(server, "operator_name.set")
    assert [(a.target_kind, a.target_id, a.details) for a in audits] == [
        ("setting", "operator_name", {"value": "Acme"}),
        ("setting", "operator_name", {"value": None}),
    ]


async def test_operator_name_without_any_is_null(server: Any) -> None:
    assert (await server.admin_get(NAME)).json() == {
        "stored": None,
        "effective": None,
        "fallback_env": None,
    }


async def test_operator_name_length_and_body(server: Any) -> None:
    assert (await server.admin_post(NAME, {"name": "n" * 200})).status_code == 200
    assert_error(await server.admin_post(NAME, {"name": "n" * 201}), 400, "bad_request")
    assert_error(
        await server.admin_post(NAME, {}), 400, "bad_request", "bad request: missing field 'name'"
    )
    assert_error(await server.admin_post(NAME, {"name": 5}), 400, "bad_request")
    assert await setting(server, "operator_name") == "n" * 200
    assert len(await audit_rows(server, "operator_name.set")) == 1


async def test_operator_name_needs_credentials(server: Any) -> None:
    assert (await server.client.get(NAME)).status_code == 401
    assert (await server.client.post(NAME, json={"name": "x"})).status_code == 401
    assert await setting(server, "operator_name") is None


# --- community analytics settings ----------------------------------------------------------


async def test_analytics_are_off_by_default_and_the_preview_is_exact(server: Any) -> None:
    response = await server.admin_get(COMMUNITY)
    assert response.status_code == 200
    assert response.json() == {
        "enabled": False,
        "collector_url": None,
        "install_uuid": None,
        "preview_heartbeat": {
            "install_uuid": ZERO_UUID,
            "daemon_version": __version__,
            "tier": "creator",
            "counts": {"products": 0, "active_licenses": 0, "settled_invoices": 0},
            "uptime_bucket": "<1d",
            "schema_version": 1,
        },
    }


async def test_opting_in_creates_an_install_uuid_that_survives_toggles(server: Any) -> None:
    assert await opt_in(server, None) == {"enabled": True, "collector_url": None}
    view = (await server.admin_get(COMMUNITY)).json()
    install_uuid = view["install_uuid"]
    assert len(install_uuid) == 36 and install_uuid != ZERO_UUID
    assert view["preview_heartbeat"]["install_uuid"] == install_uuid

    off = await server.admin_post(COMMUNITY, {"enabled": False})
    assert off.json() == {"enabled": False, "collector_url": None}
    assert (await server.admin_get(COMMUNITY)).json()["install_uuid"] == install_uuid
    await opt_in(server, "  https://collector.example/hb  ")
    view = (await server.admin_get(COMMUNITY)).json()
    assert (view["enabled"], view["install_uuid"]) == (True, install_uuid)
    assert view["collector_url"] == "https://collector.example/hb"

    audits = [
        (a.action, a.target_kind, a.details)
        for a in await audit_rows(server, "community_analytics.enable")
        + await audit_rows(server, "community_analytics.disable")
    ]
    assert audits == [
        ("community_analytics.enable", "setting", {"enabled": True, "collector_url_set": False}),
        ("community_analytics.enable", "setting", {"enabled": True, "collector_url_set": True}),
        ("community_analytics.disable", "setting", {"enabled": False, "collector_url_set": False}),
    ]


@pytest.mark.parametrize(
    "url", ["ftp://collector.example", "collector.example/hb", "javascript:x", 5]
)
async def test_a_collector_url_must_be_http(server: Any, url: Any) -> None:
    response = await server.admin_post(COMMUNITY, {"enabled": True, "collector_url": url})
    assert_error(response, 400, "bad_request")
    assert (await server.admin_get(COMMUNITY)).json()["enabled"] is False
    assert await setting(server, "community_install_uuid") is None


async def test_enabled_is_required_and_boolean(server: Any) -> None:
    assert_error(await server.admin_post(COMMUNITY, {}), 400, "bad_request")
    assert_error(await server.admin_post(COMMUNITY, {"enabled": "true"}), 400, "bad_request")


async def test_reset_clears_the_install_uuid(server: Any) -> None:
    await opt_in(server, "https://collector.example")
    response = await server.admin_post(f"{COMMUNITY}/reset")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    view = (await server.admin_get(COMMUNITY)).json()
    assert view["install_uuid"] is None
    assert view["preview_heartbeat"]["install_uuid"] == ZERO_UUID
    [audit] = await audit_rows(server, "community_analytics.reset")
    assert (audit.target_kind, audit.details) == ("setting", {})


async def test_h1_counts_are_rounded_down_to_multiples_of_five(server: Any) -> None:
    products = [await create_product(server, f"p{n}", name=f"P{n}") for n in range(4)]
    for _ in range(23):
        await add_license(server, products[0]["id"])
    await add_license(server, products[0]["id"], status="revoked")
    for _ in range(7):
        await add_invoice(server, products[1]["id"], status="settled")
    await add_invoice(server, products[1]["id"])
    preview = (await server.admin_get(COMMUNITY)).json()["preview_heartbeat"]
    assert preview["counts"] == {"products": 0, "active_licenses": 20, "settled_invoices": 5}


@pytest.mark.parametrize(
    ("count", "sent"), [(0, 0), (4, 0), (5, 5), (9, 5), (23, 20), (1000, 1000)]
)
def test_rounding_down(count: int, sent: int) -> None:
    assert rounded_down(count) == sent


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [
        (0, "<1d"),
        (86_399, "<1d"),
        (86_400, "1-7d"),
        (90_000, "1-7d"),
        (604_799, "1-7d"),
        (604_800, "1-4w"),
        (2_419_199, "1-4w"),
        (2_419_200, ">4w"),
    ],
)
def test_uptime_buckets(seconds: int, bucket: str) -> None:
    assert uptime_bucket(seconds) == bucket


async def test_the_preview_names_the_self_license_tier_also_in_sandbox_mode(
    make_server: Callable[..., Any],
) -> None:
    pro = self_license_key("unlimited_products", "recurring_billing")
    for env, tier in [
        ({"KEYSAT_LICENSE": pro}, "pro"),
        ({"KEYSAT_LICENSE": self_license_key("patron")}, "patron"),
        ({"KEYSAT_SANDBOX_MODE": "true"}, "creator"),
        ({"KEYSAT_SANDBOX_MODE": "true", "KEYSAT_LICENSE": pro}, "pro"),
    ]:
        server = await make_server(**env)
        preview = (await server.admin_get(COMMUNITY)).json()["preview_heartbeat"]
        assert preview["tier"] == tier, env


async def test_nothing_identifying_is_in_the_heartbeat(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await make_server(KEYSAT_OPERATOR_NAME="Secret Operator Ltd")
    await server.admin_post(NAME, {"name": "Stored Operator Name"})
    await connect_btcpay_row(server, fake_btcpay)
    await create_product(server, "acme")
    await issue_license(server, "acme", buyer_email="buyer@private.example")
    await opt_in(server, "https://collector.example/hb")
    preview = json.dumps((await server.admin_get(COMMUNITY)).json()["preview_heartbeat"])
    for secret in (
        "Secret Operator",
        "Stored Operator",
        "keysat.test",
        "buyer@private.example",
        fake_btcpay.store_id,
        fake_btcpay.api_key,
        fake_btcpay.url,
        "127.0.0.1",
    ):
        assert secret not in preview


async def test_analytics_need_credentials(server: Any) -> None:
    assert (await server.client.get(COMMUNITY)).status_code == 401
    assert (await server.client.post(f"{COMMUNITY}/reset")).status_code == 401


# --- the heartbeat job ---------------------------------------------------------------------


async def test_nothing_is_sent_unless_opted_in_with_a_url(
    server: Any, collector: FakeCollector
) -> None:
    sender = heartbeat(server, T0)
    assert await sender.tick(T0) is False
    await server.admin_post(COMMUNITY, {"enabled": False, "collector_url": collector.url})
    assert await sender.tick(T0) is False
    await opt_in(server, None)
    assert await sender.tick(T0) is False
    assert collector.requests == []
    assert await setting(server, "community_last_sent_at") is None


async def test_h2_the_heartbeat_is_posted_with_the_exact_body(
    server: Any, collector: FakeCollector
) -> None:
    await create_product(server, "acme")
    await opt_in(server, collector.url)
    install_uuid = await setting(server, "community_install_uuid")
    sender = heartbeat(server, T0 - timedelta(seconds=90_000))

    assert await sender.tick(T0) is True
    [sent] = collector.requests
    assert (sent.method, sent.path) == ("POST", "/v1/heartbeat")
    assert sent.headers["content-type"] == "application/json"
    assert sent.json() == {
        "install_uuid": install_uuid,
        "daemon_version": __version__,
        "tier": "creator",
        "counts": {"products": 0, "active_licenses": 0, "settled_invoices": 0},
        "uptime_bucket": "1-7d",
        "schema_version": 1,
    }
    assert list(sent.json()) == [
        "install_uuid",
        "daemon_version",
        "tier",
        "counts",
        "uptime_bucket",
        "schema_version",
    ]
    assert await setting(server, "community_last_sent_at") == T0.isoformat(timespec="microseconds")


async def test_at_most_one_heartbeat_a_day_across_processes(
    make_server: Callable[..., Any], collector: FakeCollector
) -> None:
    first = await make_server()
    second = await make_server()
    await opt_in(first, collector.url)
    assert await heartbeat(first, T0).tick(T0) is True
    # The other process shares the database and so the time of the last success.
    assert await heartbeat(second, T0).tick(T0 + DAY - timedelta(seconds=1)) is False
    assert len(collector.requests) == 1
    assert await heartbeat(second, T0).tick(T0 + DAY) is True
    assert len(collector.requests) == 2


async def test_a_refused_heartbeat_is_an_error_and_is_tried_again(
    server: Any, collector: FakeCollector
) -> None:
    await opt_in(server, collector.url)
    sender = heartbeat(server, T0)
    collector.answer_next(500)
    with pytest.raises(HeartbeatFailed, match="HTTP 500"):
        await sender.tick(T0)
    assert await setting(server, "community_last_sent_at") is None
    # Not a success, so the next tick sends again rather than waiting a day.
    assert await sender.tick(T0 + timedelta(minutes=1)) is True
    assert [r.status for r in collector.requests] == [500, 200]


async def test_an_unreachable_collector_is_an_error(server: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await opt_in(server, f"http://127.0.0.1:{port}/hb")
    with pytest.raises(HeartbeatFailed, match="unreachable"):
        await heartbeat(server, T0).tick(T0)
    assert await setting(server, "community_last_sent_at") is None


async def test_the_job_runs_on_demand_and_records_a_failure(
    server: Any, collector: FakeCollector
) -> None:
    await opt_in(server, collector.url)
    collector.answer_next(503)
    response = await server.admin_post("/v1/admin/jobs/community_heartbeat/run")
    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["name"], job["interval_seconds"]) == ("community_heartbeat", 86_400)
    assert job["last_status"] == "error"
    assert "HTTP 503" in job["last_error"]

    response = await server.admin_post("/v1/admin/jobs/community_heartbeat/run")
    assert response.json()["last_status"] == "ok"
    assert [r.status for r in collector.requests] == [503, 200]
    # The job ran at system time: the recorded success is within the last minute.
    stamp = datetime.fromisoformat(str(await setting(server, "community_last_sent_at")))
    assert datetime.now(UTC) - stamp < timedelta(minutes=1)


async def test_a_reset_while_opted_in_sends_a_new_identity(
    server: Any, collector: FakeCollector
) -> None:
    await opt_in(server, collector.url)
    old = await setting(server, "community_install_uuid")
    await server.admin_post(f"{COMMUNITY}/reset")
    assert await heartbeat(server, T0).tick(T0) is True
    new = await setting(server, "community_install_uuid")
    assert new is not None and new != old
    assert collector.requests[0].json()["install_uuid"] == new


async def test_the_enabled_setting_reads_1_or_true_in_any_case(
    server: Any, collector: FakeCollector
) -> None:
    await opt_in(server, collector.url)
    sender = heartbeat(server, T0)
    for stored, sends in [("yes", False), ("0", False), ("TRUE", True), ("1", True)]:
        async with server.state.db.write() as session:
            await put_setting(session, "community_analytics_enabled", stored)
            await put_setting(session, "community_last_sent_at", "2000-01-01T00:00:00+00:00")
        assert await sender.tick(T0) is sends, stored
        assert (await server.admin_get(COMMUNITY)).json()["enabled"] is sends


async def test_an_unreadable_last_success_does_not_stop_the_heartbeat(
    server: Any, collector: FakeCollector
) -> None:
    await opt_in(server, collector.url)
    async with server.state.db.write() as session:
        await put_setting(session, "community_last_sent_at", "yesterday-ish")
    assert await heartbeat(server, T0).tick(T0) is True
    assert await setting(server, "community_last_sent_at") == T0.isoformat(timespec="microseconds")
