"""A webhook receiver on 127.0.0.1, written the way an operator's own receiver would be.

It keeps every request's raw body and headers, and checks both signatures over the raw
bytes with its own code (nothing from keysat): `X-Keysat-Signature` with the endpoint's
secret, and `webhook-signature` the Standard Webhooks way, from the `whsec_` + base64 form of
that same secret (webhooks.md 7). A request with a bad or missing signature gets `401`, as a
careful receiver would answer, so it is never taken as delivered.

Tests steer what it answers next: a status code, a hang (until `release()` or the caller's
timeout), or closing the connection half-way through the answer. Without instructions it
answers `200`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from .base import RecordedRequest, ThreadedServer

HANG = "hang"
CLOSE = "close"
WAIT_SECONDS = 10.0
# The Standard Webhooks reference libraries refuse timestamps further off than this.
TIMESTAMP_TOLERANCE_SECONDS = 5 * 60


class StaleTimestamp(Exception):
    pass


def whsec(secret: str) -> str:
    """The form a Standard Webhooks library takes the endpoint's secret in."""
    return "whsec_" + base64.b64encode(secret.encode("utf-8")).decode("ascii")


def keysat_signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    if header is None:
        return False
    expected = "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.encode())


def standard_webhooks_verify(
    whsec_secret: str, headers: dict[str, str], body: bytes, now: float | None = None
) -> None:
    """Standard Webhooks verification, as its reference libraries do it; raises on failure.

    With `now`, the timestamp must also lie within five minutes of it."""
    key = base64.b64decode(whsec_secret.removeprefix("whsec_"))
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not timestamp or not signatures:
        raise ValueError("missing required headers")
    if now is not None and abs(now - int(timestamp)) > TIMESTAMP_TOLERANCE_SECONDS:
        raise StaleTimestamp(timestamp)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(expected, value.encode()):
            return
    raise ValueError("no matching signature")


@dataclass
class Delivery:
    """One request as received, with the verdict on each signature."""

    request: RecordedRequest
    keysat_valid: bool
    standard_valid: bool

    @property
    def headers(self) -> dict[str, str]:
        return self.request.headers

    @property
    def body(self) -> bytes:
        return self.request.body

    @property
    def id(self) -> str:
        return self.request.headers["x-keysat-delivery"]

    def json(self) -> Any:
        return self.request.json()


class WebhookReceiver:
    def __init__(self, secret: str = "") -> None:
        self.secret = secret
        self._plan: deque[int | str] = deque()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._released = threading.Event()
        self._deliveries: list[Delivery] = []

        # A plain coroutine function: uvicorn would take a bound method for ASGI 2.
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await self._handle(scope, receive, send)

        self._server = ThreadedServer(app)
        self.url = self._server.url + "/hooks"

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> WebhookReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.stop()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- controls ---------------------------------------------------------------------------

    def answer(self, *behaviours: int | str) -> None:
        """What the next requests get, in order: a status code, HANG or CLOSE."""
        with self._lock:
            self._plan.extend(behaviours)

    def release(self) -> None:
        """Let every hanging request finish (with 200)."""
        self._released.set()

    # --- what arrived -----------------------------------------------------------------------

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def wait_for(self, count: int, timeout: float = WAIT_SECONDS) -> list[Delivery]:
        """Block until `count` requests have arrived (for requests still being answered)."""
        return self.wait_until(lambda received: len(received) >= count, timeout)

    def wait_until(
        self, condition: Callable[[list[Delivery]], bool], timeout: float = WAIT_SECONDS
    ) -> list[Delivery]:
        """Block until what has arrived satisfies `condition` (a server working on its own)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not condition(self._deliveries):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"after {len(self._deliveries)} requests")
                self._arrived.wait(remaining)
            return list(self._deliveries)

    # --- the app ----------------------------------------------------------------------------

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        body = await request.body()
        headers = {key.lower(): value for key, value in request.headers.items()}
        with self._lock:
            secret = self.secret
            behaviour = self._plan.popleft() if self._plan else 200
        keysat_ok = keysat_signature_valid(secret, body, headers.get("x-keysat-signature"))
        try:
            standard_webhooks_verify(whsec(secret), headers, body)
            standard_ok = True
        except ValueError:
            standard_ok = False
        status = behaviour if isinstance(behaviour, int) else 200
        if not (keysat_ok and standard_ok):
            status = 401
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=headers,
            body=body,
            status=status,
        )
        with self._arrived:
            self._deliveries.append(Delivery(recorded, keysat_ok, standard_ok))
            self._arrived.notify_all()
        if behaviour == HANG:
            await asyncio.to_thread(self._released.wait, WAIT_SECONDS * 6)
        answer = f"answer {status}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"100")],
            }
        )
        if behaviour == CLOSE:
            # uvicorn drops the connection when an app fails after starting its answer:
            # the client sees a status line and then the end of the stream.
            raise ConnectionAbortedError("receiver closes the connection")
        await send({"type": "http.response.body", "body": answer.ljust(100)})
