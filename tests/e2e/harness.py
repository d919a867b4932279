"""A real `keysat serve` process for end-to-end tests.

`launch_server` starts the server on a free 127.0.0.1 port with its own data directory
(SQLite there by default; a fresh PostgreSQL database when KEYSAT_TEST_DATABASE_URL is
set), waits for `GET /healthz`, and always stops the process and drops the database on
exit. `KeysatServer` carries an admin HTTP client and small helpers for the admin calls
the tests use to set up products, policies and licenses.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import asyncpg
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from keysat_licensing_client import Client

from keysat.keys import load_private_key_pem

ADMIN_KEY = "e2e-admin-key-0123456789abcdefghijklmnopqrstuv"
KEYSAT_BIN = Path(sys.executable).with_name("keysat")
PG_URL_VARIABLE = "KEYSAT_TEST_DATABASE_URL"
STARTUP_DEADLINE_SECONDS = 60.0
STOP_DEADLINE_SECONDS = 10.0


class ServerStartError(RuntimeError):
    """The server process exited or did not become ready in time."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    if database is not None:
        dsn = dsn.rsplit("/", 1)[0] + "/" + database
    return dsn


async def _pg_execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def fresh_database(data_dir: Path) -> Iterator[str]:
    """A KEYSAT_DATABASE_URL: a new PostgreSQL database, or SQLite under `data_dir`."""
    pg_url = os.environ.get(PG_URL_VARIABLE)
    if not pg_url:
        yield f"sqlite:///{data_dir / 'keysat.db'}"
        return
    name = f"keysat_e2e_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_execute(pg_url, f'CREATE DATABASE "{name}"'))
    try:
        yield _asyncpg_dsn(pg_url, name)
    finally:
        asyncio.run(_pg_execute(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    with httpx.Client(base_url=base_url, timeout=2.0) as probe:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerStartError(
                    f"keysat serve exited with code {process.returncode}:\n{_log_tail(log_path)}"
                )
            with suppress(httpx.HTTPError):
                if probe.get("/healthz").status_code == 200:
                    return
            time.sleep(0.1)
    raise ServerStartError(
        f"keysat serve was not ready within {STARTUP_DEADLINE_SECONDS:.0f} s:\n"
        f"{_log_tail(log_path)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_DEADLINE_SECONDS)


@dataclass
class KeysatServer:
    base_url: str
    data_dir: Path
    log_path: Path
    admin: httpx.Client
    database_url: str

    def sdk(self) -> Client:
        """The official SDK client pointed at this server."""
        return Client(self.base_url)

    # --- admin helpers (each asserts the documented 200) ---------------------------------

    def admin_post(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = self.admin.post(path, json=dict(body) if body is not None else {})
        assert response.status_code == 200, f"POST {path}: {response.status_code} {response.text}"
        data: dict[str, Any] = response.json()
        return data

    def admin_patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = self.admin.patch(path, json=dict(body))
        assert response.status_code == 200, f"PATCH {path}: {response.status_code} {response.text}"
        data: dict[str, Any] = response.json()
        return data

    def create_product(self, slug: str, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"slug": slug, "name": fields.pop("name", slug), "price_sats": 1000}
        body.update(fields)
        return self.admin_post("/v1/admin/products", body)

    def create_policy(self, product_slug: str, slug: str, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "product_slug": product_slug,
            "slug": slug,
            "name": fields.pop("name", slug),
        }
        body.update(fields)
        return self.admin_post("/v1/admin/policies", body)

    def issue_license(self, product_slug: str, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"product_slug": product_slug}
        body.update(fields)
        return self.admin_post("/v1/admin/licenses", body)

    def revoke(self, license_id: str, reason: str | None = None) -> None:
        body = {"reason": reason} if reason is not None else {}
        self.admin_post(f"/v1/admin/licenses/{license_id}/revoke", body)

    def suspend(self, license_id: str, reason: str | None = None) -> None:
        body = {"reason": reason} if reason is not None else {}
        self.admin_post(f"/v1/admin/licenses/{license_id}/suspend", body)

    def unsuspend(self, license_id: str) -> None:
        self.admin_post(f"/v1/admin/licenses/{license_id}/unsuspend")

    def signing_key(self) -> Ed25519PrivateKey:
        """The server's own Ed25519 private key, through the master-only export."""
        exported = self.admin_post("/v1/admin/export-issuer-key")
        return load_private_key_pem(exported["private_key_pem"])


@contextmanager
def launch_server(
    work_dir: Path, env: Mapping[str, str] | None = None, *, database_url: str | None = None
) -> Iterator[KeysatServer]:
    """Run `keysat serve` until the block ends; `env` adds or overrides KEYSAT_* variables.

    With `database_url`, the process shares that database (several processes behind one
    load balancer); otherwise it gets a fresh one of its own.
    """
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "server.log"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    database = nullcontext(database_url) if database_url else fresh_database(data_dir)
    with database as database_url:
        process_env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("KEYSAT_", "LICENSING_", "BTCPAY_"))
        }
        process_env.update(
            {
                "KEYSAT_BIND": f"127.0.0.1:{port}",
                "KEYSAT_DATA_DIR": str(data_dir),
                "KEYSAT_DATABASE_URL": database_url,
                "KEYSAT_ADMIN_API_KEY": ADMIN_KEY,
                "KEYSAT_PUBLIC_URL": base_url,
                "KEYSAT_RATE_LIMITS": "off",
                "KEYSAT_RATE_SOURCES": "none",
                "KEYSAT_LOG_LEVEL": "warning",
            }
        )
        process_env.update(env or {})
        log: TextIO
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [str(KEYSAT_BIN), "serve"],
                cwd=work_dir,
                env=process_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                _wait_ready(process, base_url, log_path)
                with httpx.Client(
                    base_url=base_url,
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                    timeout=15.0,
                ) as admin:
                    yield KeysatServer(
                        base_url=base_url,
                        data_dir=data_dir,
                        log_path=log_path,
                        admin=admin,
                        database_url=database_url,
                    )
            finally:
                _stop(process)
