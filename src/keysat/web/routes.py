"""The buyer pages: home, buy (with its no-JS form post), thank-you and recover
(web.md 5-8; public-api.md 15). Thin handlers: the rules live in web.buyer and in the
purchase service the JSON API uses too."""

from __future__ import annotations

from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from keysat.access.service import request_actor
from keysat.billing.routes import NO_ADDRESS_BUCKET, spend
from keysat.billing.schemas import PurchaseRequest
from keysat.errors import ApiError
from keysat.state import app_state
from keysat.web import buyer
from keysat.web.format import buyer_message
from keysat.web.pages import render
from keysat.wire import read_body, validate_model

router = APIRouter(include_in_schema=False)

RECOVER_FAILED = "We couldn't match that invoice reference and e-mail to a completed purchase."
RECOVER_INCOMPLETE = "Enter both the invoice reference and the e-mail."
TOO_MANY = "Too many attempts. Try again in a minute."


async def _form(request: Request) -> dict[str, list[str]]:
    try:
        return parse_qs((await read_body(request)).decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return {}


async def home_page(request: Request) -> HTMLResponse:
    """GET / for browsers (web.md 5); the JSON service info route hands over to this."""
    context = await buyer.home_context(app_state(request))
    return render(request, "home.html", context, private=False)


def _not_found(request: Request, slug: str, chrome: buyer.Chrome) -> HTMLResponse:
    return render(
        request, "product_missing.html", {"slug": slug, "chrome": chrome}, status=404, private=False
    )


async def _buy_response(
    request: Request, page: buyer.BuyPage | None, slug: str, *, status: int = 200, private: bool
) -> HTMLResponse:
    if page is None:
        return _not_found(request, slug, await buyer.operator_chrome(app_state(request)))
    return render(
        request, "buy.html", page.context(), status=status, private=private, brand=page.brand
    )


@router.get("/buy/{slug}", response_class=HTMLResponse)
async def buy(request: Request, slug: str, policy: str | None = None) -> HTMLResponse:
    page = await buyer.buy_page(app_state(request), slug, buyer.BuyForm(), requested_policy=policy)
    return await _buy_response(request, page, slug, private=False)


@router.post("/buy/{slug}", response_model=None)
async def buy_form(request: Request, slug: str) -> Response:
    """The buy form without JavaScript (web.md 6.9): Apply previews, Buy purchases."""
    state = app_state(request)
    form = buyer.BuyForm.from_fields(await _form(request))
    if form.action == "apply":
        return await _apply(request, slug, form)
    try:
        await spend(
            state,
            request,
            "purchase",
            "purchase requests are rate-limited; try again in a minute",
            NO_ADDRESS_BUCKET,
        )
        body = validate_model(
            PurchaseRequest,
            {
                "product": slug,
                "policy_slug": form.policy_slug,
                "buyer_email": form.buyer_email,
                "buyer_note": form.buyer_note,
                "code": form.code,
                "rail": form.rail,
            },
        )
        bought = await state.purchases.start(body)
    except ApiError as exc:
        page = await buyer.buy_page(state, slug, form, error=buyer.purchase_error(exc.message))
        return await _buy_response(request, page, slug, status=exc.status, private=True)
    if bought.get("license_key"):
        return RedirectResponse(
            f"/thank-you?invoice_id={quote(bought['invoice_id'])}", status_code=303
        )
    context = await buyer.continue_context(state, bought["invoice_id"])
    return render(request, "continue.html", context, brand=context["brand"])


async def _apply(request: Request, slug: str, form: buyer.BuyForm) -> HTMLResponse:
    state = app_state(request)
    if not form.code.strip():
        error = buyer.FormError("Enter a code to apply it.", "code")
        page = await buyer.buy_page(state, slug, form, error=error)
        return await _buy_response(request, page, slug, status=400, private=True)
    try:
        await spend(
            state,
            request,
            "preview",
            "code previews are rate-limited; try again in a minute",
            NO_ADDRESS_BUCKET,
        )
        preview = await state.purchases.preview(form.code, slug, form.policy_slug)
    except ApiError as exc:
        error = buyer.FormError(buyer_message(exc.message), "code")
        page = await buyer.buy_page(state, slug, form, error=error)
        return await _buy_response(request, page, slug, status=exc.status, private=True)
    page = await buyer.buy_page(state, slug, form, preview=preview)
    return await _buy_response(request, page, slug, private=True)


@router.get("/thank-you", response_class=HTMLResponse)
async def thank_you(request: Request, invoice_id: str | None = None) -> HTMLResponse:
    context, brand = await buyer.receipt_context(app_state(request), invoice_id)
    return render(request, "thank_you.html", context, brand=brand)


@router.get("/recover", response_class=HTMLResponse)
async def recover_page(request: Request) -> HTMLResponse:
    chrome = await buyer.operator_chrome(app_state(request))
    return render(request, "recover.html", {"chrome": chrome, "form": {}})


@router.post("/recover", response_class=HTMLResponse)
async def recover_form(request: Request) -> HTMLResponse:
    """The recover form without JavaScript: the same rules as POST /v1/recover."""
    state = app_state(request)
    fields = await _form(request)
    invoice_id = (fields.get("invoice_id") or [""])[0]
    email = (fields.get("email") or [""])[0]
    context: dict[str, object] = {
        "chrome": await buyer.operator_chrome(state),
        "form": {"invoice_id": invoice_id, "email": email},
    }
    status = 200
    try:
        await spend(
            state,
            request,
            "recover",
            "recovery requests are rate-limited; try again in a minute",
            f"invoice:{invoice_id.strip()}",
        )
        if not invoice_id.strip() or not email.strip():
            raise ApiError(400, "bad_request", RECOVER_INCOMPLETE)
        actor = request_actor(request, state.settings, "buyer_self_service")
        answer = await state.purchases.recover(invoice_id, email, actor)
        context["recovered"] = await buyer.recovered_view(state, answer)
    except ApiError as exc:
        status = exc.status
        context["error"] = {400: RECOVER_INCOMPLETE, 429: TOO_MANY}.get(exc.status, RECOVER_FAILED)
    return render(request, "recover.html", context, status=status)
