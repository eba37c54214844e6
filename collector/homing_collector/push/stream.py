"""One push stream: a Server-Sent Events response that stays open.

It runs in the server's task for the connection, plus one small task that waits for the
client to go away. Messages reach it by `offer()` (this process committed them) or by
`request_fetch()` (read what is new from the database). Either way it writes each
endpoint's messages in increasing `seq`, with no gaps: a device's `Last-Event-ID` is a
cumulative acknowledgement, so a message must never be passed over for a later one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

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


class PushStream(Response):
    def __init__(self, gateway: Gateway, app_id: str, endpoint_id: str) -> None:
        # No Response.__init__: it would add a Content-Length for an empty body.
        self.status_code = 200
        self.background = None
        self.gateway = gateway
        self.key = (app_id, endpoint_id)
        self.last_seq = 0  # the highest seq written on this connection
        self.pending: list[QueuedPush] = []
        self.fetch = True  # read the database first: the backlog
        self.closed = False
        self.disconnected = False
        self._waiter: asyncio.Future[None] | None = None

    # -- called by the gateway, on the event loop ------------------------------------------

    def offer(self, item: QueuedPush, limit: int) -> None:
        if len(self.pending) >= limit:
            # The client reads slower than messages come. Keep memory bounded and read them
            # back from the database later, in order.
            self.pending.clear()
            self.fetch = True
        else:
            self.pending.append(item)
        self._wake()

    def request_fetch(self) -> None:
        self.fetch = True
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- the response ----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        gateway.attach(self)
        watcher = asyncio.get_running_loop().create_task(self._watch(receive))
        try:
            # A list of its own: middleware appends to it (x-amzn-RequestId).
            headers = list(_HEADERS)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": RETRY, "more_body": True})
            await self._run(send)
        except Exception:
            logger.exception("Push stream %s/%s failed; closing it", *self.key)
        finally:
            gateway.detach(self)
            watcher.cancel()
        if not self.disconnected:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True
        self.close()

    async def _run(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        heartbeat = self.gateway.heartbeat
        last_write = loop.time()
        while not self.closed:
            if self.fetch or self.pending:
                items, self.pending = self.pending, []
                if self.fetch:
                    self.fetch = False
                    app_id, endpoint_id = self.key
                    fetched = await self.gateway.storage.pending_push(
                        app_id, endpoint_id, after_seq=self.last_seq, now_ms=_now_ms()
                    )
                    items = fetched + items
                chunk = self._events(items)
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    last_write = loop.time()
                continue
            delay = last_write + heartbeat - loop.time()
            if delay <= 0:
                await send({"type": "http.response.body", "body": PING, "more_body": True})
                last_write = loop.time()
                continue
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(delay, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None

    def _events(self, items: list[QueuedPush]) -> bytes:
        now_ms = _now_ms()
        parts = []
        for item in items:
            if item.seq <= self.last_seq or item.expires_at <= now_ms:
                continue  # written already (backlog and live overlap), or expired
            parts.append(b"id: %d\nevent: push\ndata: %s\n\n" % (item.seq, item.payload.encode()))
            self.last_seq = item.seq
        if not parts:
            return b""
        self.gateway.metrics.push["sent"] += len(parts)
        return b"".join(parts)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _now_ms() -> int:
    return int(time.time() * 1000)
