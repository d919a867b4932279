"""Validate throughput and latency of a real `keysat serve`, as a ratio to a bare endpoint.

The script starts the server (SQLite in a temporary directory, rate limits off) on a free
127.0.0.1 port, seeds a product, a policy and N licenses through the admin API, then drives
it with C concurrent keep-alive HTTP/1.1 connections for a fixed duration per run:

1. bare:     GET /healthz (a JSON answer that does not touch the database)
2. validate: POST /v1/validate with valid keys and no fingerprint (read only)
3. validate: POST /v1/validate with a fingerprint per license (binds, then refreshes: writes)

Each run prints requests per second, p50 and p99 latency and the error count; the summary
prints validate / bare as a ratio measured in this one run, next to the targets. Machines
are noisy, so only the ratios within one run mean anything (ARCHITECTURE.md, Performance).

The load generator is a lean asyncio client (pre-encoded requests, status line and
Content-Length parsing) on uvloop when available, so it costs far less CPU per request
than the server; its CPU use is printed next to the server's so that can be checked.

    python bench/validate.py [--duration 10] [--concurrency 50] [--licenses 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ADMIN_KEY = "bench-admin-key-0123456789abcdefghijklmnopqrstuv"
PRODUCT_SLUG = "bench-app"
POLICY_SLUG = "bench"
STARTUP_DEADLINE_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_DURATION_SECONDS = 300.0
MAX_CONCURRENCY = 1000
TARGET_RATIO = 0.50
TARGET_P99_MS = 20.0
WARMUP_SECONDS = 1.0

HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = b"\r\ncontent-length:"


# --- the server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def keysat_command() -> list[str]:
    beside = Path(sys.executable).with_name("keysat")
    if beside.exists():
        return [str(beside), "serve"]
    found = shutil.which("keysat")
    if found is not None:
        return [found, "serve"]
    return [sys.executable, "-m", "keysat", "serve"]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Server:
    """`keysat serve` as a child process; `stop()` always ends it."""

    def __init__(self, work_dir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = work_dir / "server.log"
        data_dir = work_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("KEYSAT_", "LICENSING_", "BTCPAY_"))
        }
        env.update(
            {
                "KEYSAT_BIND": f"127.0.0.1:{self.port}",
                "KEYSAT_DATA_DIR": str(data_dir),
                "KEYSAT_DATABASE_URL": f"sqlite:///{data_dir / 'keysat.db'}",
                "KEYSAT_ADMIN_API_KEY": ADMIN_KEY,
                "KEYSAT_PUBLIC_URL": self.base_url,
                "KEYSAT_RATE_LIMITS": "off",
                "KEYSAT_LOG_LEVEL": "warning",
            }
        )
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            keysat_command(),
            cwd=work_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"keysat serve exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"keysat serve not ready after 30 s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_DEADLINE_SECONDS)
        self._log.close()


def admin_post(base_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 (always http://127.0.0.1)
        base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
        data: dict[str, Any] = json.loads(response.read())
        return data


def seed(base_url: str, licenses: int) -> list[str]:
    """A product, a policy (unlimited seats) and `licenses` keys issued from it."""
    admin_post(
        base_url,
        "/v1/admin/products",
        {"slug": PRODUCT_SLUG, "name": "Bench App", "price_sats": 1000},
    )
    admin_post(
        base_url,
        "/v1/admin/policies",
        {
            "product_slug": PRODUCT_SLUG,
            "slug": POLICY_SLUG,
            "name": "Bench",
            "max_machines": 0,
            "entitlements": ["pro", "sync"],
        },
    )
    return [
        admin_post(
            base_url,
            "/v1/admin/licenses",
            {"product_slug": PRODUCT_SLUG, "policy_slug": POLICY_SLUG},
        )["license_key"]
        for _ in range(licenses)
    ]


# --- the load generator ------------------------------------------------------------------


def encode_get(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def encode_post(path: str, host: str, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


@dataclass
class Tally:
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(text)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(HEADER_END)
    status = int(head[9:12])
    lowered = head.lower()
    at = lowered.find(CONTENT_LENGTH)
    if at < 0:
        raise ValueError("response without Content-Length")
    end = lowered.index(b"\r\n", at + 2)
    length = int(lowered[at + len(CONTENT_LENGTH) : end])
    body = await reader.readexactly(length) if length else b""
    return status, body


async def worker(
    port: int,
    requests: Sequence[bytes],
    expect: bytes,
    start: asyncio.Event,
    deadline_box: list[float],
    tally: Tally,
) -> None:
    """One keep-alive connection sending `requests` in a loop until the deadline."""
    index = 0
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT_SECONDS
    )
    await start.wait()
    deadline = deadline_box[0]
    clock = time.perf_counter_ns
    try:
        while time.perf_counter() < deadline:
            request = requests[index]
            index = (index + 1) % len(requests)
            began = clock()
            try:
                writer.write(request)
                status, body = await asyncio.wait_for(
                    read_response(reader), REQUEST_TIMEOUT_SECONDS
                )
            except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError) as exc:
                tally.error(f"{type(exc).__name__}: {exc}")
                writer.close()
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT_SECONDS
                )
                continue
            tally.latencies_ns.append(clock() - began)
            if status != 200 or expect not in body:
                tally.error(f"HTTP {status}: {body[:120]!r}")
    finally:
        writer.close()


@dataclass(frozen=True)
class Result:
    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    error_samples: list[str]
    client_cpu: float
    server_cpu: float | None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def percentile(sorted_values: Sequence[int], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index] / 1e6


async def load(
    name: str,
    server: Server,
    requests: Sequence[bytes],
    expect: bytes,
    duration: float,
    concurrency: int,
) -> Result:
    # Worker i cycles through its own share of the requests, so no two connections ever
    # send the same license at the same moment when there are enough licenses.
    shares = [list(requests[i::concurrency]) or list(requests) for i in range(concurrency)]
    tally = Tally()
    start = asyncio.Event()
    deadline_box = [0.0]
    tasks = [
        asyncio.create_task(worker(server.port, share, expect, start, deadline_box, tally))
        for share in shares
    ]
    await asyncio.sleep(0.2)  # let every connection open before the clock starts
    server_cpu_before = server.cpu_seconds()
    client_cpu_before = time.process_time()
    began = time.perf_counter()
    deadline_box[0] = began + duration
    start.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.perf_counter() - began
    client_cpu = time.process_time() - client_cpu_before
    server_cpu_after = server.cpu_seconds()
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            tally.error(f"worker failed: {type(outcome).__name__}: {outcome}")
    latencies = sorted(tally.latencies_ns)
    server_cpu = (
        None
        if server_cpu_before is None or server_cpu_after is None
        else (server_cpu_after - server_cpu_before) / elapsed
    )
    return Result(
        name=name,
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        errors=tally.errors,
        error_samples=tally.error_samples,
        client_cpu=client_cpu / elapsed,
        server_cpu=server_cpu,
    )


# --- report ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_row(result: Result) -> None:
    server_cpu = "n/a" if result.server_cpu is None else f"{result.server_cpu * 100:.0f}%"
    print(
        f"{result.name:<28} {result.rate:>9.0f} {result.p50_ms:>8.2f} {result.p99_ms:>8.2f}"
        f" {result.errors:>7d} {result.client_cpu * 100:>9.0f}% {server_cpu:>10}",
        flush=True,
    )
    for sample in result.error_samples:
        print(f"    error sample: {sample}")


def print_summary(bare: Result, runs: Sequence[Result]) -> None:
    print()
    print(f"targets: validate >= {TARGET_RATIO:.0%} of the bare rate, p99 < {TARGET_P99_MS:.0f} ms")
    for run in runs:
        ratio = run.rate / bare.rate if bare.rate else 0.0
        print(
            f"  {run.name:<26} validate/bare = {ratio:.2f} "
            f"[{verdict(ratio >= TARGET_RATIO)}]   p99 = {run.p99_ms:.2f} ms "
            f"[{verdict(run.p99_ms < TARGET_P99_MS)}]"
        )
    print(f"  (bare p99 = {bare.p99_ms:.2f} ms: the floor set by the HTTP stack at this load)")


# --- main --------------------------------------------------------------------------------


async def run_all(
    server: Server, keys: Sequence[str], duration: float, concurrency: int, fingerprints: bool
) -> None:
    host = f"127.0.0.1:{server.port}"
    bare_requests = [encode_get("/healthz", host)]
    validate_requests = [encode_post("/v1/validate", host, {"key": key}) for key in keys]
    bound_requests = [
        encode_post(
            "/v1/validate",
            host,
            {"key": key, "fingerprint": f"bench-machine-{uuid.uuid4().hex}", "hostname": "bench"},
        )
        for key in keys
    ]
    plan: list[tuple[str, list[bytes], bytes]] = [
        ("bare GET /healthz", bare_requests, b'"ok":true'),
        ("validate (no fingerprint)", validate_requests, b'"ok":true'),
    ]
    if fingerprints:
        plan.append(("validate (fingerprint)", bound_requests, b'"ok":true'))

    print(
        f"{'run':<28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
        f" {'client CPU':>10} {'server CPU':>10}"
    )
    results: list[Result] = []
    for name, requests, expect in plan:
        # A short unmeasured warm-up per run (first binds, caches, SQLite pages).
        await load(name, server, requests, expect, WARMUP_SECONDS, concurrency)
        result = await load(name, server, requests, expect, duration, concurrency)
        results.append(result)
        print_row(result)
    print_summary(results[0], results[1:])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--concurrency", type=int, default=50, help="connections (50)")
    parser.add_argument("--licenses", type=int, default=200, help="licenses to seed (200)")
    parser.add_argument(
        "--no-fingerprint-run",
        dest="fingerprints",
        action="store_false",
        help="skip the third run (validate with fingerprints, which writes)",
    )
    args = parser.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION_SECONDS:
        parser.error(f"--duration must be in (0, {MAX_DURATION_SECONDS:.0f}] seconds")
    if not 0 < args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be in 1..{MAX_CONCURRENCY}")
    if not 0 < args.licenses <= 10_000:
        parser.error("--licenses must be in 1..10000")
    return args


def event_loop_runner() -> tuple[str, Callable[[Coroutine[Any, Any, None]], None]]:
    try:
        import uvloop
    except ImportError:
        return "asyncio", asyncio.run
    return "uvloop", uvloop.run


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    loop_name, run = event_loop_runner()
    with tempfile.TemporaryDirectory(prefix="keysat-bench-") as tmp:
        server = Server(Path(tmp))
        try:
            server.wait_ready()
            keys = seed(server.base_url, args.licenses)
            print(
                f"keysat validate benchmark: {args.concurrency} connections, "
                f"{args.duration:g} s per run, {len(keys)} licenses, SQLite, "
                f"client on {loop_name}, {os.cpu_count()} CPUs\n"
            )
            run(run_all(server, keys, args.duration, args.concurrency, args.fingerprints))
        except Exception:
            print(f"server log tail:\n{server.log_tail()}", file=sys.stderr)
            raise
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
