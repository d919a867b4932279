"""Webhooks (web.md 11.5.9): endpoints with their signing secret shown once, enable and
disable, reveal, delete, and the delivery log with redeliver and the payload."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from keysat.web.admin.api import AdminApi, ApiFailure
from keysat.web.admin.shell import (
    Confirmation,
    Form,
    Problem,
    Secret,
    confirm_page,
    failure_page,
    form_session,
    notice_redirect,
    page_session,
    read_form,
    render_admin,
    secret_page,
)
from keysat.webhooks.events import EVENT_TYPES

router = APIRouter(include_in_schema=False)

ACTIVE = "webhooks"
BASE = "/admin/webhooks"
STATUSES = (
    ("all", "All"),
    ("pending", "Pending (in the retry queue)"),
    ("delivered", "Delivered"),
    ("failed", "Failed (dead-lettered)"),
)
DEFAULT_STATUS = "failed"
DELIVERY_LIMIT = 100


@dataclass(frozen=True)
class DeliveryState:
    label: str
    tone: str


def delivery_state(delivery: dict[str, Any]) -> DeliveryState:
    """The derived state of webhooks.md 5.6, as a pill."""
    if delivery.get("delivered_at"):
        return DeliveryState("Delivered", "ok")
    if delivery.get("next_attempt_at"):
        if delivery.get("attempt_count"):
            return DeliveryState("Retrying", "warn")
        return DeliveryState("Pending", "info")
    if delivery.get("attempt_count"):
        return DeliveryState("Failed", "bad")
    return DeliveryState("Pending", "info")


def pretty_payload(payload: str) -> str:
    """The exact body sent, indented for reading; a body that is not JSON stays as sent."""
    try:
        return json.dumps(json.loads(payload), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return payload


def whsec(secret: str) -> str:
    """The form a Standard Webhooks library takes the same secret in (webhooks.md 2, 7)."""
    return "whsec_" + base64.b64encode(secret.encode("utf-8")).decode("ascii")


def events_text(event_types: list[str]) -> str:
    return "All events" if "*" in event_types else ", ".join(event_types)


def empty_text(status: str, *, filtered: bool) -> str:
    kinds = {"all": "", "pending": "pending ", "delivered": "delivered ", "failed": "failed "}
    scope = " for this endpoint" if filtered else ""
    return f"No {kinds.get(status, '')}deliveries{scope}."


def deliveries_url(
    status: str, endpoint: str | None, *, anchor: str = "deliveries", **extra: str
) -> str:
    query = {"status": status, **({"endpoint": endpoint} if endpoint else {}), **extra}
    return f"{BASE}?{urlencode(query)}#{anchor}"


def endpoint_secret(endpoint: dict[str, Any], *, created: bool) -> Secret:
    secret = str(endpoint.get("secret") or "")
    return Secret(
        title="Endpoint added" if created else "Signing secret",
        value=secret,
        note=(
            f"Deliveries to {endpoint.get('url')} are signed with this signing secret. Put it "
            "in your receiver's configuration to check X-Keysat-Signature, or give the Standard "
            "Webhooks form below to a Standard Webhooks library."
        ),
        back=BASE,
        extra=[("Standard Webhooks form", whsec(secret))],
        warning=(
            "This page shows it once. Copy it now; Reveal secret shows it again if you must."
            if created
            else "Keep it private: anyone with it can forge deliveries to your receiver."
        ),
    )


async def _page(
    request: Request,
    *,
    problem: Problem | None = None,
    status: int = 200,
    form: Form | None = None,
) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    query = request.query_params
    chosen = query.get("status") or DEFAULT_STATUS
    if chosen not in dict(STATUSES):
        chosen = DEFAULT_STATUS
    endpoint_filter = query.get("endpoint") or None
    try:
        endpoints = (await api.get("/v1/admin/webhook-endpoints"))["endpoints"]
        deliveries = (
            await api.get(
                "/v1/admin/webhook-deliveries",
                status=chosen,
                endpoint_id=endpoint_filter,
                limit=DELIVERY_LIMIT,
            )
        )["deliveries"]
        latest = {
            endpoint["id"]: next(
                iter(
                    (
                        await api.get(
                            "/v1/admin/webhook-deliveries", endpoint_id=endpoint["id"], limit=1
                        )
                    )["deliveries"]
                ),
                None,
            )
            for endpoint in endpoints
        }
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    urls = {endpoint["id"]: endpoint["url"] for endpoint in endpoints}
    rows = [
        {
            **delivery,
            "state": delivery_state(delivery),
            "endpoint_url": urls.get(delivery["endpoint_id"], delivery["endpoint_id"]),
            "payload": pretty_payload(delivery["payload_json"]),
            "payload_href": deliveries_url(
                chosen, endpoint_filter, payload=delivery["id"], anchor="payload"
            ),
        }
        for delivery in deliveries
    ]
    shown = next((row for row in rows if row["id"] == query.get("payload")), None)
    payload = {**shown, "close_href": deliveries_url(chosen, endpoint_filter)} if shown else None
    for endpoint in endpoints:
        last = latest.get(endpoint["id"])
        endpoint["last"] = {**last, "state": delivery_state(last)} if last else None
        endpoint["events"] = events_text(endpoint["event_types"])
    return await render_admin(
        request,
        session,
        api,
        "admin/webhooks.html",
        {
            "endpoints": endpoints,
            "deliveries": rows,
            "statuses": STATUSES,
            "status": chosen,
            "endpoint_filter": endpoint_filter,
            "endpoint_options": [("", "All endpoints")] + [(e["id"], e["url"]) for e in endpoints],
            "empty_text": empty_text(chosen, filtered=endpoint_filter is not None),
            "delete_confirmation": delete_confirmation,
            "queued": query.get("queued"),
            "payload": payload,
            "delivery_limit": DELIVERY_LIMIT,
            "event_types": EVENT_TYPES,
            "open_form": form is not None or query.get("new") == "1",
            "values": form.echo() if form else {},
            "field_errors": {problem.field: problem.message} if problem and problem.field else {},
            "checked": form.all("event_types") if form else ["*"],
            "base": BASE,
        },
        active=ACTIVE,
        title="Webhooks",
        problem=problem,
        status=status,
    )


@router.get(BASE, response_class=HTMLResponse)
async def webhooks_page(request: Request) -> HTMLResponse:
    return await _page(request)


@router.post(BASE, response_model=None)
async def create_endpoint(request: Request) -> Response:
    session = await form_session(request)
    form = await read_form(request)
    api = AdminApi(request, session)
    body: dict[str, Any] = {"url": form.text("url"), "description": form.text("description")}
    events = form.all("event_types")
    if events:
        body["event_types"] = ["*"] if "*" in events else events
    answer = await api.send("POST", "/v1/admin/webhook-endpoints", body)
    if not answer.ok:
        problem = Problem.of(answer)
        field = next(
            (name for name in ("url", "description") if f"'{name}'" in problem.message), None
        )
        if field:
            problem = Problem(problem.message, problem.upgrade_url, field)
        return await _page(request, problem=problem, status=answer.status, form=form)
    return await secret_page(
        request, session, api, endpoint_secret(answer.body, created=True), active=ACTIVE
    )


@router.post(BASE + "/{endpoint_id}/active", response_model=None)
async def set_active(request: Request, endpoint_id: str) -> Response:
    session = await form_session(request)
    form = await read_form(request)
    active = form.flag("active")
    answer = await AdminApi(request, session).send(
        "PATCH", f"/v1/admin/webhook-endpoints/{endpoint_id}/active", {"active": active}
    )
    if not answer.ok:
        return await _page(request, problem=Problem.of(answer), status=answer.status)
    text = (
        "Endpoint enabled: new events are delivered to it again."
        if active
        else "Endpoint disabled: it gets no new deliveries, and its queued ones fail."
    )
    return notice_redirect(BASE, text)


@router.post(BASE + "/{endpoint_id}/secret", response_model=None)
async def reveal_secret(request: Request, endpoint_id: str) -> Response:
    """A post, not a link: the secret travels only in this one answer to a CSRF-checked form."""
    session = await form_session(request)
    api = AdminApi(request, session)
    answer = await api.call("GET", "/v1/admin/webhook-endpoints", params={"include_secret": "true"})
    if not answer.ok:
        return await _page(request, problem=Problem.of(answer), status=answer.status)
    found = next((e for e in answer.body["endpoints"] if e["id"] == endpoint_id), None)
    if found is None:
        return await _page(
            request, problem=Problem(f"not found: webhook endpoint {endpoint_id}"), status=404
        )
    return await secret_page(
        request, session, api, endpoint_secret(found, created=False), active=ACTIVE
    )


def delete_confirmation(url: str) -> Confirmation:
    return Confirmation(
        title="Delete this endpoint?",
        message=f"{url} stops receiving events at once.",
        button="Delete",
        bullets=(
            "Its whole delivery history is deleted with it: delivered, queued and failed "
            "deliveries alike, so nothing queued is sent afterwards.",
            "To pause deliveries and keep the history, disable the endpoint instead.",
        ),
        danger=True,
    )


@router.post(BASE + "/{endpoint_id}/delete", response_model=None)
async def delete_endpoint(request: Request, endpoint_id: str) -> Response:
    session = await form_session(request)
    form = await read_form(request)
    api = AdminApi(request, session)
    if not form.flag("confirmed"):
        return await confirm_page(
            request,
            session,
            api,
            delete_confirmation(form.text("url")),
            form,
            active=ACTIVE,
            back=BASE,
        )
    answer = await api.send("DELETE", f"/v1/admin/webhook-endpoints/{endpoint_id}")
    if not answer.ok:
        return await _page(request, problem=Problem.of(answer), status=answer.status)
    count = int(answer.body.get("cascaded_deliveries") or 0)
    plural = "delivery" if count == 1 else "deliveries"
    return notice_redirect(BASE, f"Endpoint deleted, with {count} {plural} of its history.")


@router.post(BASE + "/deliveries/{delivery_id}/retry", response_model=None)
async def redeliver(request: Request, delivery_id: str) -> Response:
    session = await form_session(request)
    form = await read_form(request)
    answer = await AdminApi(request, session).send(
        "POST", f"/v1/admin/webhook-deliveries/{delivery_id}/retry"
    )
    if not answer.ok:
        return await _page(request, problem=Problem.of(answer), status=answer.status)
    # Listed under All: the row has left the Failed list it was redelivered from.
    back = deliveries_url("all", form.optional("endpoint"), queued=delivery_id)
    return notice_redirect(back, "Delivery queued: it goes out within about five seconds.")
