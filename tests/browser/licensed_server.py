"""A real HTTP server for browser tests that need this server's own license: the app runs
in a thread of the test process, built like `keysat serve` builds it but verifying
self-licenses against the test trust root (`support.TRUST_KEY`), which `keysat serve` in
another process cannot be given. Production mode (no sandbox), so Zaprite can be connected
once a Pro key is activated, and BTCPay points at a fake.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from e2e.harness import ADMIN_KEY, KeysatServer
from keysat.app import build_state, create_app, prepare
from keysat.settings import load_settings
from support import TRUST_KEY

START_DEADLINE_SECONDS = 20.0


@contextmanager
def licensed_server(work_dir: Path, env: Mapping[str, str] | None = None) -> Iterator[KeysatServer]:
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    database_url = f"sqlite:///{data_dir / 'keysat.db'}"
    settings = load_settings(
        {
            "KEYSAT_ENV": "production",
            "KEYSAT_ADMIN_API_KEY": ADMIN_KEY,
            "KEYSAT_DATABASE_URL": database_url,
            "KEYSAT_DATA_DIR": str(data_dir),
            "KEYSAT_PUBLIC_URL": base_url,
            "KEYSAT_RATE_LIMITS": "off",
            "KEYSAT_RATE_SOURCES": "none",
            "KEYSAT_WORKERS": "false",
            **(env or {}),
        },
        dotenv=False,
    )
    config = uvicorn.Config(
        "keysat.app:create_app", log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    async def main() -> None:
        state = build_state(settings, ADMIN_KEY, trust_root=TRUST_KEY.public_key())
        await prepare(state)
        server.config.app = create_app(state)
        server.config.loaded = False
        await server.serve(sockets=[sock])
        await state.db.dispose()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the waiting test
            failure.append(exc)

    thread = threading.Thread(target=run, name="licensed-keysat", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while not server.started:
        if failure or time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"in-process keysat did not start: {failure}")
        time.sleep(0.02)
    try:
        with httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=15.0
        ) as admin:
            yield KeysatServer(
                base_url=base_url,
                data_dir=data_dir,
                log_path=work_dir / "server.log",
                admin=admin,
                database_url=database_url,
            )
    finally:
        server.should_exit = True
        thread.join(timeout=START_DEADLINE_SECONDS)
        sock.close()
