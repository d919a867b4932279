"""`make run` (`keysat serve --demo`): the printed buy URL of the demo shop sells in the
sandbox at once, and a second start adds nothing."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KEYSAT = str(Path(sys.executable).parent / "keysat")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_demo(env: dict[str, str], cwd: Path) -> tuple[str, list[str]]:
    """Start, wait for health, stop; the start-up banner and the buy URLs it printed."""
    port = int(env["KEYSAT_BIND"].rsplit(":", 1)[1])
    process = subprocess.Popen(
        [KEYSAT, "serve", "--demo"], env=env, cwd=cwd, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        products = httpx.get(f"http://127.0.0.1:{port}/v1/products", timeout=5).json()
        page = httpx.get(f"http://127.0.0.1:{port}/buy/demo-app", timeout=5)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert page.status_code == 200 and "Demo App" in page.text and "20% OFF" in page.text
    assert [item["slug"] for item in products["products"]] == ["demo-app"]
    return stderr, re.findall(r"Buy page: +(\S+)", stderr)


def test_make_run_prints_a_buy_url_that_sells(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSAT_", "LICENSING_"))}
    env.update(
        KEYSAT_ENV="development",
        KEYSAT_BIND=f"127.0.0.1:{port}",
        KEYSAT_DATA_DIR=str(tmp_path / "data"),
        KEYSAT_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    stderr, urls = serve_demo(env, tmp_path)
    assert urls == [f"http://127.0.0.1:{port}/buy/demo-app"]
    assert f"Home page:  http://127.0.0.1:{port}/" in stderr
    _, again = serve_demo(env, tmp_path)
    assert again == urls
