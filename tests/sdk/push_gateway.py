"""A tiny push gateway on loopback: the stream and acks of the push contract, no storage.

Real uvicorn, real sockets; the SDK's receiver talks to it exactly as to the collector.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from homing import _json


@dataclass
class Gateway:
    """Holds messages per endpoint; serves them to each connection until acked."""

    messages: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    connections: list[dict[str, str]] = field(default_factory=list)  # request headers
    status: int = 200  # answer the stream with this status (e.g. 503) while not 200
    heartbeat: float = 0.2
    drop_after: int | None = None  # close each connection after sending this many
    url: str = ""
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _generation: int = 0

    def send(self, data: dict[str, str], *, message_id: str, silent: bool = False) -> int:
        seq = len(self.messages) + 1
        body = {"MessageId": message_id, "Silent": silent,
                "ExpiresAt": "2099-01-01T00:00:00.000Z", "Data": data}  # fmt: skip
        self.messages.append((seq, body))
        return seq

    def drop_connections(self) -> None:
        self._generation += 1

    async def stream(self, request: Request) -> Response:
        self.connections.append(dict(request.headers))
        if self.status != 200:
            return JSONResponse({"Message": "unavailable", "RequestID": "r"}, self.status)
        last = int(request.headers.get("last-event-id", "0") or 0)
        generation = self._generation

        async def events() -> Any:
            yield b"retry: 5000\n\n"
            sent = 0
            next_beat = time.monotonic() + self.heartbeat
            delivered: set[int] = set()
            while generation == self._generation:
                for seq, body in list(self.messages):
                    if seq <= last or seq in delivered or body["MessageId"] in self.acked:
                        continue
                    delivered.add(seq)
                    sent += 1
                    yield f"id: {seq}\nevent: push\ndata: ".encode() + _json.dumps(body) + b"\n\n"
                    if self.drop_after is not None and sent >= self.drop_after:
                        return
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat
                    yield b": ping\n\n"
                await asyncio.sleep(0.02)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"cache-control": "no-store"}
        )

    async def acks(self, request: Request) -> Response:
        ids = _json.loads(await request.body())["MessageIds"]
        new = [i for i in ids if i not in self.acked]
        self.acked.extend(new)
        return JSONResponse({"Acknowledged": len(new)}, 202)

    def start(self) -> Gateway:
        app = Starlette(
            routes=[
                Route("/v1/apps/{app}/endpoints/{endpoint}/stream", self.stream),
                Route("/v1/apps/{app}/endpoints/{endpoint}/stream/acks", self.acks,
                      methods=["POST"]),
            ]
        )  # fmt: skip
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.drop_connections()
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(5)


Answer = tuple[int, str, list[bytes]]  # status, content type, the body in the pieces written


class RawServer:
    """A stream endpoint that writes exactly the bytes it is given, then closes.

    For what the gateway above never sends: odd ids, a line ending cut between two writes,
    a captive portal's page. `answer(headers)` gives each connection its answer; acks are
    recorded. Plain http.server: one thread per connection, nothing shared with uvicorn.
    """

    def __init__(self, answer: Callable[[dict[str, str]], Answer], hold: float = 0.3) -> None:
        self.connections: list[dict[str, str]] = []
        self.acked: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.connections.append(headers)
                status, content_type, pieces = answer(headers)
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("connection", "close")
                self.end_headers()
                try:
                    for piece in pieces:  # separate writes: the reader sees separate chunks
                        self.wfile.write(piece)
                        self.wfile.flush()
                        time.sleep(0.02)
                except OSError:
                    return  # the receiver hung up
                if status == 200 and "event-stream" in content_type:
                    time.sleep(hold)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                server.acked.extend(_json.loads(body)["MessageIds"])
                out = b'{"Acknowledged": 1}'
                self.send_response(202)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/stream"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def sse(event_id: str, message_id: str, data: dict[str, str], eol: bytes = b"\n") -> bytes:
    """One push event as the collector writes it, with `eol` ending each line."""
    body = {"MessageId": message_id, "Silent": False, "ExpiresAt": "2099-01-01T00:00:00.000Z",
            "Data": data}  # fmt: skip
    lines = [b"id: " + event_id.encode(), b"event: push", b"data: " + _json.dumps(body)]
    return eol.join(lines) + eol + eol
