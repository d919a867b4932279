"""The `keysat` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from urllib.parse import urlsplit

import typer
import uvicorn

from keysat import __version__
from keysat.app import build_state, create_app, prepare
from keysat.db import MigrationError
from keysat.keys import KeyFileError
from keysat.settings import ADMIN_KEY_MIN_LENGTH, Settings, SettingsError, load_settings
from keysat.web.demo import DEMO_SLUG, seed_demo_shop, shop_slugs

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="Keysat licensing server.")
log = logging.getLogger("keysat")

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
SHOWN_BUY_PAGES = 5


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"keysat: {message}", err=True)
    return typer.Exit(code)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class PathOnlyAccessLog(logging.Filter):
    """Uvicorn's access lines without the query string, which can carry secrets: BTCPay
    hands its new API key to the authorize callback as `apiKey` (access.md 7)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # aiosqlite's debug lines repeat every statement with its parameters: CSRF tokens,
    # webhook secrets, the signing key. Nothing there is worth that.
    logging.getLogger("aiosqlite").setLevel(max(root.level, logging.INFO))
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, PathOnlyAccessLog) for existing in access.filters):
        access.addFilter(PathOnlyAccessLog())


def resolve_admin_key(settings: Settings) -> tuple[str, bool]:
    """The master key from the environment, else the key file, else a new one (config.md 2)."""
    if settings.admin_api_key is not None:
        return settings.admin_api_key, False
    path = settings.admin_key_file
    if path.exists():
        key = path.read_text().strip()
        if len(key) < ADMIN_KEY_MIN_LENGTH:
            raise fail(f"{path}: the admin key must be at least {ADMIN_KEY_MIN_LENGTH} characters")
        return key, False
    key = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return key, True


def load_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise fail(str(exc)) from None


@cli.command()
def serve(
    demo: bool = typer.Option(
        False, "--demo", help="In sandbox mode, add a demo product when the catalog is empty."
    ),
) -> None:
    """Run the HTTP server and the background workers."""
    settings = load_or_exit()
    configure_logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    admin_key, generated = resolve_admin_key(settings)
    state = build_state(settings, admin_key)
    shop: list[str] = []

    async def start() -> None:
        try:
            await prepare(state)
            if demo and await seed_demo_shop(state):
                log.info("added the demo product '%s' to the empty catalog", DEMO_SLUG)
            shop.extend(await shop_slugs(state))
        finally:
            await state.db.dispose()

    try:
        asyncio.run(start())
    except MigrationError as exc:
        raise fail(
            f"database migration failed; the database was left unchanged: {exc}", 1
        ) from None
    except KeyFileError as exc:
        raise fail(f"the stored signing key is unusable: {exc}", 1) from None

    base = f"http://{settings.bind_host}:{settings.bind_port}"
    if settings.bind_host in ("0.0.0.0", "::"):  # noqa: S104
        base = f"http://localhost:{settings.bind_port}"
    if generated:
        typer.echo(
            f"Generated an admin API key and saved it to {settings.admin_key_file} (mode 0600).\n"
            "Store it somewhere safe: it is shown only this once.\n"
            f"  KEYSAT_ADMIN_API_KEY={admin_key}",
            err=True,
        )
    mode = "development (sandbox mode)" if settings.sandbox_mode else settings.env
    pages = settings.public_url
    buy_lines = "".join(f"  Buy page:   {pages}/buy/{slug}\n" for slug in shop[:SHOWN_BUY_PAGES])
    if not shop:
        buy_lines = "  Buy pages:  none yet: add a product (README, Walk-through with curl)\n"
    typer.echo(
        f"Keysat {__version__} ({mode}) listening on {base}\n"
        f"  Home page:  {pages}/  (open it in a browser)\n"
        f"{buy_lines}"
        f"  API:        {base}/\n"
        f"  Public key: {base}/v1/pubkey\n"
        f"  Admin UI:   {pages}/admin/  (sign in with the admin key)\n"
        f"  Admin API:  {base}/v1/admin/  (Authorization: Bearer <admin key>)\n"
        f"  Admin key file: {settings.admin_key_file}",
        err=True,
    )
    if (urlsplit(settings.public_url).hostname or "") in LOOPBACK_HOSTS:
        log.warning(
            "KEYSAT_PUBLIC_URL is %s: payment providers on other hosts cannot reach it",
            settings.public_url,
        )
    uvicorn.run(
        create_app(state),
        host=settings.bind_host,
        port=settings.bind_port,
        proxy_headers=False,
        server_header=False,
        log_config=None,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
    )


@cli.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    cli(prog_name="keysat")


if __name__ == "__main__":
    main()
