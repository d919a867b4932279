"""A community-analytics collector on 127.0.0.1 (billing.md 10).

It records every request with its raw body and answers `200` unless told otherwise with
`answer_next(status)`.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType

from starlette.types import Receive, Scope, Send

from .base import RecordedRequest, ThreadedServer


class FakeCollector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: deque[int] = deque()
        self._requests: list[RecordedRequest] = []

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await self._handle(scope, receive, send)

        self._server = ThreadedServer(app)
        self.url = self._server.url + "/v1/heartbeat"

    def __enter__(self) -> FakeCollector:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def answer_next(self, status: int) -> None:
        with self._lock:
            self._plan.append(status)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with self._lock:
            status = self._plan.popleft() if self._plan else 200
            self._requests.append(
                RecordedRequest(
                    method=scope["method"],
                    path=scope["path"],
                    query=scope["query_string"].decode(),
                    headers={k.decode(): v.decode() for k, v in scope["headers"]},
                    body=body,
                    status=status,
                )
            )
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
