"""One push stream: a Server-Sent Events response that stays open.

An idle stream has no task of its own: the server's task for the connection waits for the
client to leave, and a timer stands for the next heartbeat. Something to write (a message,
a heartbeat, the end) starts a short task that writes and ends. Messages reach a stream
by `offer()` (this process committed them) or by `request_fetch()` (read what is new
from the database). Either way it writes each endpoint's messages in increasing `seq`,
with no gaps: a device's `Last-Event-ID` is a cumulative acknowledgement, so a message
must never be passed over for a later one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from homing_collector.push import epoch_ms
from homing_collector.storage.base import QueuedPush

if TYPE_CHECKING:
    from homing_collector.push.gateway import Gateway

logger = logging.getLogger("homing_collector")

RETRY = b"retry: 5000\n\n"
PING = b": ping\n\n"
_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]
# orjson leaves U+2028, U+2029 and U+0085 unescaped, as JSON allows; but a client that
# splits lines like str.splitlines() (httpx's iter_lines(), for one) ends a line there and
# cuts the message in two. Escaped, they read the same and break no line anywhere. They can
# only stand inside a JSON string, where the escape means the same character.
_ESCAPES = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


class PushStream(Response):
    def __init__(
        self,
        gateway: Gateway,
        app_id: str,
        endpoint_id: str,
        access_key_id: str,
        *,
        device: str | bool | None = False,
    ) -> None:
        # No Response.__init__: it would add a Content-Length for an empty body.
        self.status_code = 200
        self.background = None
        self.gateway = gateway
        self.key = (app_id, endpoint_id)
        # The key that opened the stream: revoking it, or deleting the app, ends the stream.
        self.access_key_id = access_key_id
        # The SHA-256 of the endpoint's device credential when the stream opened (None: it
        # had none); False for an admin key, which needs none. A credential issued,
        # reissued or revoked since ends the stream, as a revoked key does.
        self.device = device
        self.last_seq = 0  # the highest seq written on this connection
        self.pending: list[QueuedPush] = []
        self.fetch = True  # read the database first: the backlog
        self.closed = False  # asked to end
        self.ended = False  # the response is complete, or the client has gone
        self._send: Send | None = None
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_write = 0.0
        self._key_checked = 0.0  # when the key was last found valid

    # -- called by the gateway, on the event loop ------------------------------------------

    def offer(self, item: QueuedPush, limit: int) -> None:
        if len(self.pending) >= limit:
            # The client reads slower than messages come. Keep memory bounded and read them
            # back from the database later, in order.
            self.pending.clear()
            self.fetch = True
        else:
            self.pending.append(item)
        self._kick()

    def request_fetch(self) -> None:
        self.fetch = True
        self._kick()

    def close(self) -> None:
        self.closed = True
        self._kick()

    # -- the response ----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A list of its own: middleware appends to it (x-amzn-RequestId).
        headers = list(_HEADERS)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": RETRY, "more_body": True})
        self._send = send
        self._last_write = self._key_checked = asyncio.get_running_loop().time()
        self.gateway.attach(self)
        try:
            self._kick()  # the backlog
            # Returns when the client goes away, or once _write has ended the response.
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            self.ended = True
            self.gateway.detach(self)
            if self._timer is not None:
                self._timer.cancel()
            if self._writer is not None:
                self._writer.cancel()

    def _kick(self) -> None:
        if self._writer is None and not self.ended and self._send is not None:
            self._writer = asyncio.get_running_loop().create_task(self._write(self._send))

    def _heartbeat(self) -> None:
        self._timer = None
        self._kick()

    async def _write(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self.ended:
                if self.closed:
                    self.ended = True
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                if loop.time() - self._key_checked >= self.gateway.heartbeat * 0.99:
                    # A key revoked by another process (the CLI, another worker), or an
                    # app deleted there, is seen here once a heartbeat, busy or idle: one
                    # lookup by primary key.
                    if not await self.gateway.key_valid(
                        self.access_key_id, self.key[0]
                    ) or not await self.gateway.device_valid(self):
                        self.closed = True
                        continue
                    self._key_checked = loop.time()
                if self.fetch or self.pending:
                    chunk = await self._next_events()
                elif loop.time() - self._last_write >= self.gateway.heartbeat * 0.99:
                    chunk = PING
                else:
                    break
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    self._last_write = loop.time()
        except Exception:
            logger.exception("Push stream %s/%s failed; ending it", *self.key)
            self.closed = True
        finally:
            self._writer = None
        if self.closed and not self.ended:
            self._kick()
        elif not self.ended:
            if self._timer is not None:
                self._timer.cancel()
            delay = self._last_write + self.gateway.heartbeat - loop.time()
            self._timer = loop.call_later(max(0.0, delay), self._heartbeat)

    async def _next_events(self) -> bytes:
        items, self.pending = self.pending, []
        if self.fetch:
            self.fetch = False
            app_id, endpoint_id = self.key
            fetched = await self.gateway.storage.pending_push(
                app_id, endpoint_id, after_seq=self.last_seq, now_ms=epoch_ms()
            )
            items = fetched + items
        now_ms = epoch_ms()
        parts = []
        for item in items:
            if item.seq <= self.last_seq or item.expires_at <= now_ms:
                continue  # written already (backlog and live overlap), or expired
            payload = item.payload.translate(_ESCAPES).encode()
            parts.append(b"id: %d\nevent: push\ndata: %s\n\n" % (item.seq, payload))
            self.last_seq = item.seq
        if not parts:
            return b""
        self.gateway.metrics.push["sent"] += len(parts)
        return b"".join(parts)
