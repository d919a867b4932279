"""Policies (web.md 11.5.3): each product's tiers as the buyer's cards with admin details, in
upgrade-ladder order; create and edit with every field, hide, disable, archive, reorder the
ladder, copy the deep link, and safe-then-force delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from keysat.access.models import WebSession
from keysat.state import app_state
from keysat.web.admin.api import AdminApi, ApiFailure
from keysat.web.admin.catalog_forms import FieldError, cap_notice
from keysat.web.admin.products import removed_text
from keysat.web.admin.shell import (
    Confirmation,
    Form,
    Problem,
    confirm_page,
    failure_page,
    form_session,
    not_found_page,
    notice_redirect,
    page_session,
    read_form,
    render_admin,
)
from keysat.web.admin.tier_forms import (
    CADENCES,
    DURATIONS,
    admin_card,
    echoed_tier,
    ladder_order,
    moved,
    rank_changes,
    tier_body,
    tier_values,
    tip_fields,
)

router = APIRouter(include_in_schema=False)

ACTIVE = "policies"
LIST = "/admin/policies"
TOGGLES = {
    # action: (endpoint, body field, value, notice)
    "hide": ("public", "public", False, "hidden from the buy page"),
    "show": ("public", "public", True, "shown on the buy page"),
    "disable": ("active", "active", False, "disabled"),
    "enable": ("active", "active", True, "enabled"),
    "archive": ("archived", "archived", True, "archived"),
    "unarchive": ("archived", "archived", False, "unarchived"),
}


def archive_confirmation(policy: dict[str, Any]) -> Confirmation:
    return Confirmation(
        title=f"Archive {policy['name']}?",
        message="You can unarchive it later.",
        button="Archive",
        bullets=(
            "Existing licenses keep validating.",
            "The tier disappears from the buy page and the public tier list.",
            "New purchases and redemptions of it are refused.",
            "Subscription renewals on it stop.",
        ),
    )


def disable_confirmation(policy: dict[str, Any]) -> Confirmation:
    return Confirmation(
        title=f"Disable {policy['name']}?",
        message="It stays here so you can enable it again.",
        button="Disable",
        bullets=(
            "It cannot be bought, redeemed or upgraded to.",
            "Existing licenses keep validating.",
        ),
    )


def delete_confirmation(policy: dict[str, Any]) -> Confirmation:
    return Confirmation(
        title=f"Delete {policy['name']}?",
        message=(
            "A tier with live licenses, settled invoices or active subscriptions is not "
            "deleted: you will be asked again before those are removed too."
        ),
        button="Delete tier",
        bullets=(
            f"Licenses: {policy['licenses']:,}",
            f"Settled invoices: {policy['settled']:,}",
            f"Live subscriptions: {policy['live']:,}",
        ),
        warning="Archiving keeps everything and takes the tier off the buy page.",
        danger=True,
    )


def force_confirmation(policy: dict[str, Any], message: str) -> Confirmation:
    return Confirmation(
        eyebrow="Force delete",
        title=f"Delete {policy['name']} and everything sold with it?",
        message=message,
        button="Delete everything",
        bullets=(
            "Its licenses stop validating: they are deleted with their machines.",
            "Its invoices and subscriptions are deleted.",
            "Discount codes limited to it are narrowed, or disabled when nothing is left.",
        ),
        danger=True,
        type_to_confirm=policy["slug"],
    )


async def _tiers(api: AdminApi, product: dict[str, Any], archived: bool) -> list[dict[str, Any]]:
    listing = await api.get(
        "/v1/admin/policies",
        product_slug=product["slug"],
        include_inactive="true",
        include_archived="true" if archived else "false",
    )
    return ladder_order(listing["policies"])


async def _sections(api: AdminApi, archived: bool) -> dict[str, Any]:
    products = (await api.get("/v1/admin/products"))["products"]
    counts = (await api.get("/v1/admin/licenses/counts"))["by_policy"]
    tier = await api.get("/v1/admin/tier")
    cap = tier["caps"]["policies_per_product"]
    sections = []
    for product in products:
        tiers = await _tiers(api, product, archived)
        every = await _tiers(api, product, True)
        cards = []
        for index, policy in enumerate(tiers):
            card, features = admin_card(index, policy, product)
            cards.append(
                {
                    "policy": policy,
                    "card": card,
                    "features": features,
                    "licenses": counts.get(policy["id"], 0),
                    "first": index == 0,
                    "last": index == len(tiers) - 1,
                }
            )
        sections.append(
            {
                "product": product,
                "cards": cards,
                "buyable": any(p["active"] and p["public"] and not p["archived_at"] for p in tiers),
                "cap": cap_notice(len(every), cap),
                "ladder": ",".join(p["id"] for p in tiers),
            }
        )
    return {
        "sections": sections,
        "archived": archived,
        "upgrade_url": tier["upgrade_url"],
        "confirm": {
            "archive": archive_confirmation,
            "disable": disable_confirmation,
        },
    }


@router.get("/admin/policies", response_class=HTMLResponse)
async def policies_page(request: Request, archived: str | None = None) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    try:
        context = await _sections(api, archived == "1")
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    context["base_url"] = app_state(request).sessions.public_origin
    return await render_admin(
        request, session, api, "admin/policies.html", context, active=ACTIVE, title="Policies"
    )


async def _find(
    api: AdminApi, policy_id: str
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]] | None:
    """The tier, its product and all the product's tiers in ladder order."""
    for product in (await api.get("/v1/admin/products"))["products"]:
        tiers = await _tiers(api, product, True)
        for policy in tiers:
            if policy["id"] == policy_id:
                return policy, product, tiers
    return None


async def _product(api: AdminApi, slug: str) -> dict[str, Any] | None:
    products = (await api.get("/v1/admin/products"))["products"]
    return next((p for p in products if p["slug"] == slug), None)


async def _form_page(
    request: Request,
    session: WebSession,
    api: AdminApi,
    product: dict[str, Any],
    values: dict[str, Any],
    *,
    policy: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    problem: Problem | None = None,
    status: int = 200,
) -> HTMLResponse:
    tier = await api.get("/v1/admin/tier")
    recurring_allowed = bool(tier["sandbox"]) or "recurring_billing" in tier["entitlements"]
    title = f"Edit {policy['name']}" if policy else f"Add a tier to {product['name']}"
    return await render_admin(
        request,
        session,
        api,
        "admin/policies_form.html",
        {
            "product": product,
            "policy": policy,
            "values": values,
            "errors": errors or {},
            "durations": DURATIONS,
            "cadences": CADENCES,
            "catalog": product["entitlements_catalog"] or [],
            "recurring_locked": not recurring_allowed and not (policy and policy["is_recurring"]),
            "upgrade_url": tier["upgrade_url"],
        },
        active=ACTIVE,
        title=title,
        problem=problem,
        status=status,
    )


@router.get("/admin/policies/new", response_class=HTMLResponse, response_model=None)
async def new_tier_page(request: Request, product: str = "") -> Response:
    session = await page_session(request)
    api = AdminApi(request, session)
    found = await _product(api, product)
    if found is None:
        return await not_found_page(request, session, api, f"product '{product}'", active=ACTIVE)
    return await _form_page(request, session, api, found, tier_values(None, found))


@router.post("/admin/policies/new", response_model=None)
async def create_tier(request: Request, product: str = "") -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    found = await _product(api, product)
    if found is None:
        return await not_found_page(request, session, api, f"product '{product}'", active=ACTIVE)
    try:
        body = tier_body(form, found, create=True)
    except FieldError as error:
        return await _form_page(
            request,
            session,
            api,
            found,
            echoed_tier(form),
            errors={error.field: error.message},
            problem=Problem(error.message, field=error.field),
            status=400,
        )
    answer = await api.send("POST", "/v1/admin/policies", body)
    if not answer.ok:
        return await _form_page(
            request,
            session,
            api,
            found,
            echoed_tier(form),
            problem=Problem.of(answer),
            status=answer.status,
        )
    created = answer.body
    if not form.flag("public"):
        await api.send("PATCH", f"/v1/admin/policies/{created['id']}/public", {"public": False})
    return notice_redirect(f"{LIST}#tier-{created['id']}", f"Tier {created['name']} created.")


@router.get("/admin/policies/{policy_id}/edit", response_class=HTMLResponse, response_model=None)
async def edit_tier_page(request: Request, policy_id: str) -> Response:
    session = await page_session(request)
    api = AdminApi(request, session)
    found = await _find(api, policy_id)
    if found is None:
        return await not_found_page(
            request, session, api, f"tier with id {policy_id}", active=ACTIVE
        )
    policy, product, _ = found
    return await _form_page(
        request, session, api, product, tier_values(policy, product), policy=policy
    )


@router.post("/admin/policies/{policy_id}/edit", response_model=None)
async def edit_tier(request: Request, policy_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    found = await _find(api, policy_id)
    if found is None:
        return await not_found_page(
            request, session, api, f"tier with id {policy_id}", active=ACTIVE
        )
    policy, product, _ = found
    values = {**echoed_tier(form), "slug": policy["slug"]}
    try:
        body = tier_body(form, product, metadata=policy["metadata"], create=False)
        tip = tip_fields(form)
    except FieldError as error:
        return await _form_page(
            request,
            session,
            api,
            product,
            values,
            policy=policy,
            errors={error.field: error.message},
            problem=Problem(error.message, field=error.field),
            status=400,
        )
    answers = [await api.send("PATCH", f"/v1/admin/policies/{policy_id}", body)]
    stored_tip = {k: policy[k] for k in ("tip_recipient", "tip_pct_bps", "tip_label")}
    if answers[-1].ok and tip != stored_tip:
        answers.append(await api.send("PATCH", f"/v1/admin/policies/{policy_id}/tip", tip))
    if answers[-1].ok and form.flag("public") != policy["public"]:
        answers.append(
            await api.send(
                "PATCH", f"/v1/admin/policies/{policy_id}/public", {"public": form.flag("public")}
            )
        )
    if not answers[-1].ok:
        return await _form_page(
            request,
            session,
            api,
            product,
            values,
            policy=policy,
            problem=Problem.of(answers[-1]),
            status=answers[-1].status,
        )
    return notice_redirect(f"{LIST}#tier-{policy_id}", f"{body['name']} saved.")


@router.post("/admin/policies/{policy_id}/toggle/{action}", response_model=None)
async def toggle(request: Request, policy_id: str, action: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    found = await _find(api, policy_id)
    if found is None or action not in TOGGLES:
        return await not_found_page(
            request, session, api, f"tier with id {policy_id}", active=ACTIVE
        )
    policy = found[0]
    asks = {"archive": archive_confirmation, "disable": disable_confirmation}
    if action in asks and not form.flag("confirmed"):
        return await confirm_page(
            request, session, api, asks[action](policy), form, active=ACTIVE, back=LIST
        )
    endpoint, field, value, done = TOGGLES[action]
    answer = await api.send("PATCH", f"/v1/admin/policies/{policy_id}/{endpoint}", {field: value})
    back = f"{LIST}?archived=1" if action == "unarchive" else LIST
    if not answer.ok:
        return notice_redirect(back, answer.message, kind="error")
    return notice_redirect(f"{back}#tier-{policy_id}", f"{policy['name']} {done}.")


async def _apply_ranks(api: AdminApi, tiers: list[dict[str, Any]], order: list[str]) -> str | None:
    for tier_id, rank in rank_changes(tiers, order):
        answer = await api.send("PATCH", f"/v1/admin/policies/{tier_id}", {"tier_rank": rank})
        if not answer.ok:
            return answer.message
    return None


@router.post("/admin/policies/{policy_id}/move", response_model=None)
async def move(request: Request, policy_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    found = await _find(api, policy_id)
    if found is None:
        return await not_found_page(
            request, session, api, f"tier with id {policy_id}", active=ACTIVE
        )
    policy, _, _ = found
    shown = [tier_id for tier_id in form.text("ladder").split(",") if tier_id]
    if policy_id not in shown:
        shown = [policy_id]
    order = moved(shown, policy_id, form.text("direction"))
    tiers = found[2]
    failure = await _apply_ranks(api, tiers, order)
    back = f"{LIST}?archived=1" if form.flag("archived") else LIST
    if failure:
        return notice_redirect(back, failure, kind="error")
    return notice_redirect(f"{back}#tier-{policy_id}", f"Ladder updated: {policy['name']} moved.")


@router.post("/admin/policies/ladder/{product_slug}", response_model=None)
async def reorder(request: Request, product_slug: str) -> Response:
    """The order a drag and drop left: every listed tier ranked 1…N."""
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    product = await _product(api, product_slug)
    if product is None:
        return await not_found_page(
            request, session, api, f"product '{product_slug}'", active=ACTIVE
        )
    tiers = await _tiers(api, product, True)
    known = {p["id"] for p in tiers}
    order = [tier_id for tier_id in form.text("order").split(",") if tier_id in known]
    failure = await _apply_ranks(api, tiers, order)
    back = f"{LIST}?archived=1" if form.flag("archived") else LIST
    if failure:
        return notice_redirect(back, failure, kind="error")
    return notice_redirect(f"{back}#product-{product_slug}", "Ladder updated.")


async def _usage(api: AdminApi, policy: dict[str, Any]) -> dict[str, Any]:
    counts = (await api.get("/v1/admin/licenses/counts"))["by_policy"]
    invoices = await api.get(
        "/v1/admin/invoices", status="settled", product_id=policy["product_id"], limit=1000
    )
    subscriptions = await api.get(
        "/v1/admin/subscriptions", product_id=policy["product_id"], limit=1000
    )
    return {
        **policy,
        "licenses": counts.get(policy["id"], 0),
        "settled": sum(1 for i in invoices["invoices"] if i.get("policy_id") == policy["id"]),
        "live": sum(
            1
            for s in subscriptions["subscriptions"]
            if s.get("policy_id") == policy["id"] and s.get("status") in ("active", "past_due")
        ),
    }


@router.post("/admin/policies/{policy_id}/delete", response_model=None)
async def delete_tier(request: Request, policy_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    found = await _find(api, policy_id)
    if found is None:
        return await not_found_page(
            request, session, api, f"tier with id {policy_id}", active=ACTIVE
        )
    try:
        policy = await _usage(api, found[0])
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    force = form.flag("force")
    if not form.flag("confirmed"):
        return await confirm_page(
            request, session, api, delete_confirmation(policy), form, active=ACTIVE, back=LIST
        )
    if force and form.text("typed") != policy["slug"]:
        confirmation = force_confirmation(policy, "Type the tier's slug exactly to confirm.")
        return await confirm_page(
            request, session, api, confirmation, form, active=ACTIVE, back=LIST
        )
    query = "true" if force else "false"
    answer = await api.send("DELETE", f"/v1/admin/policies/{policy_id}", force=query)
    if answer.status == 409 and not force:
        forced = Form({**form.values, "force": ["1"]})
        return await confirm_page(
            request,
            session,
            api,
            force_confirmation(policy, answer.message),
            forced,
            active=ACTIVE,
            back=LIST,
        )
    if not answer.ok:
        return notice_redirect(LIST, answer.message, kind="error")
    codes = int(answer.body.get("disabled_codes") or 0)
    extra = f" {codes} discount code(s) limited to it were disabled." if codes else ""
    return notice_redirect(
        LIST, f"Deleted {policy['name']}; also removed {removed_text(answer.body)}.{extra}"
    )
