"""A real HTTP server on 127.0.0.1 for a fake peer, run in a background thread.

Fakes are ASGI apps (Starlette) served by uvicorn on a free port, so the code under test
talks to them over real HTTP exactly as it talks to the real service. The thread has its
own event loop; tests in any loop (or a separate `keysat serve` process) can reach it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

START_DEADLINE_SECONDS = 10.0


@dataclass
class RecordedRequest:
    """One request a fake received, and what it answered."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    response_body: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class ThreadedServer:
    """Serve an ASGI app on 127.0.0.1 in a daemon thread until `stop()`."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", loop="asyncio"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"fake-{self.port}", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"fake server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=START_DEADLINE_SECONDS)
        self._sock.close()


class RestartablePeer:
    """A fake provider served on a fresh 127.0.0.1 port by each `start()`, so a test can take
    it down and bring it back. Subclasses answer requests in `_app`; `_stopping` is set on
    `stop()` so handlers parked by a simulated hang let the server exit promptly."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._server: ThreadedServer | None = None

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._stopping.clear()

        # uvicorn takes a bound method for an ASGI2 app; a plain coroutine function is ASGI3.
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await self._app(scope, receive, send)

        self._server = ThreadedServer(app).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._server.url
