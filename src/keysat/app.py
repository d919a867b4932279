"""create_app(settings): routers, middleware, error envelope, lifespan."""

from __future__ import annotations

import gc
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import keysat.models  # noqa: F401 - every table in the metadata, so every foreign key resolves
from keysat import __version__
from keysat.access.jobs import access_jobs
from keysat.access.ratelimit import RateLimiter
from keysat.access.routes import admin_router as access_admin_router
from keysat.access.routes import login_router as access_login_router
from keysat.access.selflicense import SelfLicensing
from keysat.access.selflicense import trust_root as embedded_trust_root
from keysat.access.service import Access, MasterKey
from keysat.access.sessions import Sessions
from keysat.billing.jobs import billing_jobs
from keysat.billing.purchase import Purchases
from keysat.billing.rates import RateService
from keysat.billing.routes import admin_router as billing_admin_router
from keysat.billing.routes import public_router as billing_public_router
from keysat.billing.settlement import Settlement
from keysat.catalog.routes import admin_router as catalog_admin_router
from keysat.catalog.routes import public_router as catalog_public_router
from keysat.clock import clock
from keysat.db import Database
from keysat.errors import ApiError, bad_request, internal_error, method_not_allowed, not_found
from keysat.issuer.routes import router as issuer_router
from keysat.issuer.service import IssuerKeys, ensure_signing_key
from keysat.jobs import Job, JobRunner
from keysat.licensing.jobs import WriteBehind
from keysat.licensing.keyauth import key_reader
from keysat.licensing.machines import MachineEndpoints
from keysat.licensing.routes import admin_router as licensing_admin_router
from keysat.licensing.routes import public_router as licensing_public_router
from keysat.licensing.validation import Validator
from keysat.openapi import build_openapi
from keysat.operator.community import CommunityHeartbeat
from keysat.operator.profile_routes import router as merchant_profiles_router
from keysat.operator.routes import router as operator_router
from keysat.payments.connect import seed_btcpay_from_environment
from keysat.payments.routes import admin_router as payments_admin_router
from keysat.payments.routes import public_router as payments_public_router
from keysat.payments.service import Providers
from keysat.settings import Settings
from keysat.state import AppState
from keysat.subscriptions.clock import SandboxClock
from keysat.subscriptions.jobs import RenewalWorker, SavedCardCapture, subscription_jobs
from keysat.subscriptions.routes import admin_router as subscriptions_admin_router
from keysat.subscriptions.routes import public_router as subscriptions_public_router
from keysat.subscriptions.upgrades import TierChanges
from keysat.web.admin.routes import form_refused, login_required
from keysat.web.admin.routes import router as admin_ui_router
from keysat.web.admin.shell import FormRefused, LoginRequired
from keysat.web.pages import router as pages_router
from keysat.web.routes import router as buyer_pages_router
from keysat.webhooks.jobs import webhook_jobs
from keysat.webhooks.routes import admin_router as webhooks_admin_router

log = logging.getLogger(__name__)

# The SDK routes come first: the router tries routes in order, and validate is the hot path.
ROUTERS = (
    licensing_public_router,
    operator_router,
    issuer_router,
    catalog_public_router,
    billing_public_router,
    payments_public_router,
    subscriptions_public_router,
    catalog_admin_router,
    licensing_admin_router,
    billing_admin_router,
    payments_admin_router,
    subscriptions_admin_router,
    webhooks_admin_router,
    merchant_profiles_router,
    access_admin_router,
    access_login_router,
    pages_router,
    buyer_pages_router,
    # Last: its catch-all answers unknown /admin/ paths with the admin 404 page.
    admin_ui_router,
)

CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"


class EdgeMiddleware:
    """CORS for every response (public-api.md 1.6) and no-store on the admin surface."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if (
            scope["method"] == "OPTIONS"
            and origin is not None
            and "access-control-request-method" in headers
        ):
            await self._preflight(headers, send)
            return
        no_store = scope["path"].startswith("/v1/admin")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                if origin is not None:
                    response_headers["Access-Control-Allow-Origin"] = "*"
                if no_store:
                    response_headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _preflight(headers: Headers, send: Send) -> None:
        response_headers = [
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-methods", CORS_METHODS.encode()),
            (b"access-control-max-age", b"600"),
            (b"content-length", b"0"),
        ]
        requested = headers.get("access-control-request-headers")
        if requested:
            response_headers.append((b"access-control-allow-headers", requested.encode("latin-1")))
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": b""})


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(FormRefused, form_refused)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _error_response(not_found("no such endpoint"))
        if exc.status_code == 405:
            return _error_response(method_not_allowed(request.method, request.url.path))
        if exc.status_code == 400:
            return _error_response(bad_request(str(exc.detail)))
        return _error_response(ApiError(exc.status_code, "error", str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def query_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        name = str(first["loc"][-1]) if first.get("loc") else "request"
        if first.get("type") == "missing":
            return _error_response(bad_request(f"missing query parameter '{name}'"))
        return _error_response(bad_request(f"invalid parameter '{name}'"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        reference = secrets.token_hex(6)
        log.error(
            "internal error %s on %s %s", reference, request.method, request.url.path, exc_info=exc
        )
        return _error_response(internal_error(reference))


async def prepare(state: AppState) -> None:
    """Everything that must succeed before the first request: schema and signing key."""
    await state.db.migrate()
    await ensure_signing_key(state.db, state.issuer_keys)
    await seed_btcpay_from_environment(state.db, state.settings)
    await state.self_license.refresh()
    await state.sandbox_clock.load()


def build_state(
    settings: Settings,
    admin_key: str,
    db: Database | None = None,
    trust_root: Ed25519PublicKey | None = None,
) -> AppState:
    """`trust_root` replaces the embedded self-license root, for tests only."""
    database = db or Database(settings.database_url)
    issuer_keys = IssuerKeys()
    limiter = RateLimiter(database, settings)
    write_behind = WriteBehind(database)
    reader = key_reader(database, issuer_keys)
    # One pool of outbound connections for providers and rate sources; every call sets
    # its own timeout (payments.md 2.6).
    http = httpx.AsyncClient(follow_redirects=False)
    rates = RateService(database, settings, http)
    providers = Providers(database, settings, http)
    settlement = Settlement(database, providers)
    settlement.after_settled.append(SavedCardCapture(database, providers))
    renewals = RenewalWorker(database, settings, rates, providers, settlement)
    self_license = SelfLicensing(database, settings, trust_root or embedded_trust_root())
    community = CommunityHeartbeat(database, http, self_license, started_at=clock.real_now())
    master_key = MasterKey(admin_key)
    sessions = Sessions(database, settings, master_key.hash)

    async def refresh_self_license(_at: datetime) -> None:
        await self_license.refresh()

    jobs = [
        *billing_jobs(database, settlement),
        *subscription_jobs(renewals),
        *webhook_jobs(database, http),
        *access_jobs(sessions),
        Job("self_license_refresh", timedelta(hours=1), timedelta(hours=1), refresh_self_license),
        community.job(),
    ]
    return AppState(
        settings=settings,
        db=database,
        master_key=master_key,
        access=Access(database, settings, master_key, sessions),
        sessions=sessions,
        issuer_keys=issuer_keys,
        rate_limiter=limiter,
        write_behind=write_behind,
        key_reader=reader,
        validator=Validator(database, reader, limiter, write_behind),
        machines=MachineEndpoints(database, issuer_keys, limiter),
        http=http,
        rates=rates,
        providers=providers,
        settlement=settlement,
        purchases=Purchases(database, settings, rates, providers, issuer_keys),
        jobs=JobRunner(database, jobs),
        self_license=self_license,
        tier_changes=TierChanges(database, settings, rates, providers, issuer_keys),
        sandbox_clock=SandboxClock(database, settings.sandbox_mode),
        community=community,
    )


def create_app(state: AppState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything loaded at start (modules, routes, models) lives for the whole process:
        # keep it out of the collector's scans, which otherwise show up as latency spikes.
        gc.collect()
        gc.freeze()
        state.write_behind.start()
        state.sandbox_clock.start()
        # Every process follows activations made through another, workers or not.
        state.self_license.follower.start()
        if state.settings.workers:
            state.jobs.start()
        try:
            yield
        finally:
            await state.jobs.stop()
            await state.sandbox_clock.stop()
            await state.self_license.follower.stop()
            await state.write_behind.stop()
            await state.http.aclose()
            state.key_reader.close()
            await state.db.dispose()

    app = FastAPI(
        title="Keysat",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.keysat = state
    app.router.redirect_slashes = False
    for router in ROUTERS:
        app.include_router(router)

    @app.get("/v1/openapi.json")
    async def openapi_document() -> JSONResponse:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return JSONResponse(app.openapi_schema)

    _install_error_handlers(app)
    app.add_middleware(EdgeMiddleware)
    return app
