"""Jobs (web.md 11.5.14): every background job, its last and next run, and "Run now"."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from keysat.web.admin.api import AdminApi, ApiFailure
from keysat.web.admin.shell import (
    Problem,
    failure_page,
    form_session,
    notice_redirect,
    page_session,
    render_admin,
)

router = APIRouter(include_in_schema=False)

ACTIVE = "jobs"
PURPOSES = {
    "reconciler": "Re-reads pending invoices from their providers and settles the paid ones.",
    "renewals": "Opens renewal invoices, charges saved cards and lapses unpaid subscriptions.",
    "webhook_delivery": "Sends queued webhook deliveries and retries the failed ones.",
    "tips": "Pays the revenue-share tips of settled sales.",
    "emails": "Sends buyer e-mail receipts.",
    "redemption_reaper": "Frees discount-code slots held by invoices abandoned for 30 minutes.",
    "session_reaper": "Deletes web sessions past their lifetime or idle timeout.",
    "authorize_state_pruning": "Forgets BTCPay connect links that were never used.",
    "self_license_refresh": "Re-checks this server's own license and tier.",
    "community_heartbeat": "Sends the opt-in anonymous usage heartbeat.",
}


def duration_text(started: str | None, finished: str | None) -> str | None:
    """How long the last run took, from its two RFC 3339 stamps."""
    if not started or not finished:
        return None
    try:
        seconds = (
            datetime.fromisoformat(finished.replace("Z", "+00:00"))
            - datetime.fromisoformat(started.replace("Z", "+00:00"))
        ).total_seconds()
    except ValueError:
        return None
    if seconds < 0:
        return None
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


async def _page(
    request: Request, problem: Problem | None = None, status: int = 200
) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    try:
        listing = await api.get("/v1/admin/jobs")
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    jobs = [
        {
            **job,
            "purpose": PURPOSES.get(job["name"], ""),
            "duration": duration_text(job["last_started_at"], job["last_finished_at"]),
        }
        for job in listing["jobs"]
    ]
    return await render_admin(
        request,
        session,
        api,
        "admin/jobs.html",
        {"jobs": jobs},
        active=ACTIVE,
        title="Jobs",
        problem=problem,
        status=status,
    )


@router.get("/admin/jobs", response_class=HTMLResponse)
async def jobs_page(request: Request) -> HTMLResponse:
    return await _page(request)


@router.post("/admin/jobs/{name}/run", response_model=None)
async def run_job(request: Request, name: str) -> Response:
    session = await form_session(request)
    answer = await AdminApi(request, session).send("POST", f"/v1/admin/jobs/{name}/run")
    if not answer.ok:
        return await _page(request, Problem.of(answer), status=answer.status)
    result = answer.body.get("last_status") or "done"
    return notice_redirect("/admin/jobs", f"{name} ran: {result}.")
