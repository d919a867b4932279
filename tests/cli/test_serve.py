"""`keysat serve` as an operator runs it: first-run admin key, bad settings, bad databases."""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
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


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSAT_", "LICENSING_"))}
    env.update(extra)
    return env


def wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"keysat did not answer on port {port}")


def test_first_start_generates_admin_key_file_and_prints_it_once(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(KEYSAT_DATA_DIR=str(tmp_path / "data"), KEYSAT_BIND=f"127.0.0.1:{port}")
    process = subprocess.Popen(
        [KEYSAT, "serve"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_healthy(port)
        key_file = tmp_path / "data" / "admin-api-key"
        key = key_file.read_text().strip()
        assert len(key) == 43
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        audit = httpx.get(
            f"http://127.0.0.1:{port}/v1/admin/audit",
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        )
        assert audit.status_code == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert stderr.count(key) == 1
    assert f"http://127.0.0.1:{port}/" in stderr

    second = subprocess.Popen(
        [KEYSAT, "serve"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_healthy(port)
    finally:
        second.terminate()
        _, stderr = second.communicate(timeout=20)
    assert key not in stderr
    assert "listening on" in stderr


def test_bad_setting_stops_start_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [KEYSAT, "serve"],
        env=clean_env(KEYSAT_DATA_DIR=str(tmp_path), KEYSAT_RATE_LIMIT_VALIDATE="lots"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("keysat: KEYSAT_RATE_LIMIT_VALIDATE:")


def test_failed_migration_stops_start_and_keeps_the_database(tmp_path: Path) -> None:
    database = tmp_path / "keysat.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE products (id TEXT PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO products VALUES ('p1', 'precious data')")
    result = subprocess.run(
        [KEYSAT, "serve"],
        env=clean_env(
            KEYSAT_ADMIN_API_KEY="x" * 40,
            KEYSAT_DATABASE_URL=f"sqlite:///{database}",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "database migration failed; the database was left unchanged" in result.stderr
    assert "products" in result.stderr
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        rows = connection.execute("SELECT * FROM products").fetchall()
    assert rows == [("p1", "precious data")]
    assert "alembic_version" not in tables
    assert "licenses" not in tables
