"""A real webhook receiver: a tiny ASGI app served by uvicorn on a loopback port.

Each receiver records what it got and answers by a script, so tests can inject 503s,
410s, Retry-After and slow answers over real HTTP.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0  # seconds to wait before answering
    body: bytes = b""
    drip: float = 0.0  # if set, the body goes a byte at a time, this many seconds apart


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when the answer was sent
    headers: dict[str, str]
    body: bytes


Script = Callable[[int, bytes], Answer]  # the nth request (from 0) and its body -> the answer


@dataclass
class Receiver:
    script: Script
    url: str = ""
    received: list[Received] = field(default_factory=list)
    max_in_flight: int = 0  # the most requests it was answering at once
    _count: int = 0
    _in_flight: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        answer = self.script(self._count, b"".join(chunks))
        self._count += 1
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        self._in_flight -= 1
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(time.monotonic(), headers, b"".join(chunks)))
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(k.encode(), v.encode()) for k, v in answer.headers],
            }
        )
        if not answer.drip:
            await send({"type": "http.response.body", "body": answer.body})
            return
        for byte in answer.body:
            await send({"type": "http.response.body", "body": bytes([byte]), "more_body": True})
            await asyncio.sleep(answer.drip)
        await send({"type": "http.response.body", "body": b""})


def always(answer: Answer) -> Script:
    return lambda _n, _body: answer


@contextmanager
def serving(*scripts: Script) -> Iterator[list[Receiver]]:
    """Serve one receiver per script, each on its own port, from one uvicorn thread."""
    receivers = [Receiver(script) for script in scripts]
    servers: list[uvicorn.Server] = []
    sockets: list[socket.socket] = []
    for receiver in receivers:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        receiver.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        config = uvicorn.Config(
            receiver, loop="asyncio", lifespan="off", log_level="warning", access_log=False
        )
        servers.append(uvicorn.Server(config))

    async def run_all() -> None:
        await asyncio.gather(
            *(server.serve(sockets=[sock]) for server, sock in zip(servers, sockets, strict=True))
        )

    thread = threading.Thread(target=asyncio.run, args=(run_all(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not all(server.started for server in servers):
        assert time.monotonic() < deadline, "the receivers did not start"
        time.sleep(0.01)
    try:
        yield receivers
    finally:
        for server in servers:
            server.should_exit = True
        thread.join(10)
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
