"""`make test`: lint, types, then the whole suite on SQLite and again on PostgreSQL.

The browser tests (Playwright driving Debian's Chromium), the schemathesis fuzz run and the
unit tests of pure code run in the SQLite leg only: they exercise pages, the HTTP contract
and functions, not the database, and a second run would only double their time. Each leg
spreads its tests over one worker process per CPU (pytest-xdist), keeping a module's tests
together so a module's server starts once.
Legs that cannot run on this machine are named with the reason; under CI (CI=true) a
missing PostgreSQL or a missing Chromium is a failure, never a skip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_URL = os.environ.get("KEYSAT_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
CHROMIUM = Path("/usr/bin/chromium")
NOT_BROWSER = ["-m", "not browser"]
NOT_BROWSER_NOR_FUZZ = ["-m", "not browser and not fuzz"]
NOT_UNIT = ["--ignore=tests/unit"]
PARALLEL = ["-n", "auto", "--dist", "loadscope"]


def run(title: str, command: list[str], env: dict[str, str] | None = None) -> bool:
    print(f"\n=== {title} ===", flush=True)
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode == 0  # noqa: S603


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


def pytest_leg(
    title: str, extra_env: dict[str, str], totals: dict[str, int], options: list[str]
) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        env = {**os.environ, **extra_env}
        command = [str(BIN / "pytest"), "-q", *PARALLEL, f"--junitxml={report}", *options]
        ok = run(title, command, env)
        if report.exists():
            suite = ET.parse(report).getroot()  # noqa: S314
            node = suite if suite.tag == "testsuite" else suite[0]
            tests = int(node.get("tests", 0))
            failed = int(node.get("failures", 0)) + int(node.get("errors", 0))
            skipped = int(node.get("skipped", 0))
            totals["passed"] += tests - failed - skipped
            totals["failed"] += failed
            totals["skipped"] += skipped
            if tests == 0:
                ok = False
        else:
            ok = False
    return ok


def main() -> int:
    in_ci = os.environ.get("CI", "").lower() == "true"
    results: dict[str, bool] = {}
    notes: list[str] = ["unit tests of pure code and the fuzz run: in the SQLite leg only"]
    totals = {"passed": 0, "failed": 0, "skipped": 0}

    results["ruff"] = run("ruff", [str(BIN / "ruff"), "check", "src", "tests", "bench", "tools"])
    results["format"] = run(
        "ruff format", [str(BIN / "ruff"), "format", "--check", "src", "tests", "bench", "tools"]
    )
    results["mypy"] = run("mypy", [str(BIN / "mypy")])
    browser_options: list[str] = []
    if CHROMIUM.exists():
        notes.append("browser tests: run in the SQLite leg only")
    elif in_ci:
        print(f"\nBrowser tests: {CHROMIUM} not found, and CI never skips them.")
        results["browser"] = False
        browser_options = NOT_BROWSER
    else:
        notes.append(f"browser leg skipped: {CHROMIUM} not found")
        browser_options = NOT_BROWSER
    results["sqlite"] = pytest_leg("pytest on SQLite", {}, totals, browser_options)

    if postgres_reachable():
        results["postgresql"] = pytest_leg(
            "pytest on PostgreSQL (without the browser, fuzz and unit tests)",
            {"KEYSAT_TEST_DATABASE_URL": PG_URL},
            totals,
            [*NOT_BROWSER_NOR_FUZZ, *NOT_UNIT],
        )
    elif in_ci:
        print("\nPostgreSQL leg: no server on 127.0.0.1:5432, and CI never skips it.")
        results["postgresql"] = False
    else:
        notes.append("PostgreSQL leg skipped: no server answers on 127.0.0.1:5432")

    print("\n=== summary ===")
    for name, ok in results.items():
        print(f"{name}: {'ok' if ok else 'FAILED'}")
    for line in notes:
        print(line)
    print(f"{totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
