"""The push gateway: the open streams of this process, and its background chores.

Messages are committed before anyone hears of them, so a stream can always read them
back; the gateway only tells streams when to write. With several server processes on one
database, a message sent through one process reaches a stream held by another through a
cheap poll: each process watches SQLite's data_version and, when another connection has
committed, asks the database which endpoints have new messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from homing_collector.metrics import Metrics
from homing_collector.push import epoch_ms
from homing_collector.push.stream import PushStream
from homing_collector.storage.base import QueuedPush, Storage

logger = logging.getLogger("homing_collector")

PURGE_INTERVAL = 60.0  # seconds between deletions of expired messages
POLL_INTERVAL = 0.1  # seconds between checks for messages sent by other processes
POLL_OVERLAP_MS = 5000  # a message committed this long after it was stamped is still seen


class Gateway:
    def __init__(
        self,
        storage: Storage,
        metrics: Metrics,
        *,
        heartbeat: float,
        queue_limit: int,
        default_ttl: int,
        shared: bool,
    ) -> None:
        self.storage = storage
        self.metrics = metrics
        self.heartbeat = heartbeat
        self.queue_limit = queue_limit
        self.default_ttl = default_ttl
        # Other processes may send to the streams held here (serve --workers).
        self.shared = shared
        self.closing = False
        self._streams: dict[tuple[str, str], list[PushStream]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.closing = False
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._every(PURGE_INTERVAL, self.purge)))
        if self.shared:
            self._tasks.append(loop.create_task(self._poll_others()))

    def close_streams(self) -> None:
        """End every stream now, so that a graceful shutdown need not wait for them."""
        self.closing = True
        for streams in list(self._streams.values()):
            for stream in streams:
                stream.close()

    async def close(self) -> None:
        self.close_streams()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # -- streams -----------------------------------------------------------------------

    def attach(self, stream: PushStream) -> None:
        self._streams.setdefault(stream.key, []).append(stream)
        self.metrics.push_streams += 1
        if self.closing:
            stream.close()

    def close_key(self, access_key_id: str) -> None:
        """End the streams opened with a key, now that it is revoked."""
        self._close_where(lambda stream: stream.access_key_id == access_key_id)

    def close_app(self, app_id: str) -> None:
        """End the streams of an application, now that it is deleted."""
        self._close_where(lambda stream: stream.key[0] == app_id)

    def close_endpoint(self, app_id: str, endpoint_id: str) -> None:
        """End the streams of an endpoint, now that its device credential changed."""
        self._close_where(lambda stream: stream.key == (app_id, endpoint_id))

    async def device_valid(self, stream: PushStream) -> bool:
        """Whether the endpoint's device credential is still the one the stream opened
        with. Changes here end streams at once; this catches other workers' changes."""
        if stream.device is False:
            return True
        app_id, endpoint_id = stream.key
        found = await self.storage.device_credentials(app_id, [endpoint_id])
        return found.get(endpoint_id) == stream.device

    def _close_where(self, match: Callable[[PushStream], bool]) -> None:
        for streams in list(self._streams.values()):
            for stream in list(streams):
                if match(stream):
                    stream.close()

    async def key_valid(self, access_key_id: str, app_id: str) -> bool:
        """Whether a stream's key still stands: not revoked, and its app (a root key's
        too) not deleted. Revocations here end streams at once; this catches the rest."""
        key = await self.storage.get_key(access_key_id)
        if key is None or key.revoked_at is not None:
            return False
        return key.app_id == app_id or await self.storage.get_app(app_id) is not None

    def detach(self, stream: PushStream) -> None:
        streams = self._streams.get(stream.key)
        if streams is not None and stream in streams:
            streams.remove(stream)
            if not streams:
                del self._streams[stream.key]
            self.metrics.push_streams -= 1

    def offer(self, app_id: str, endpoint_id: str, item: QueuedPush) -> bool:
        """Hand a committed message to this process's streams for the endpoint; return
        whether there was one. Call in commit order, with no await since the commit."""
        streams = self._streams.get((app_id, endpoint_id))
        if not streams:
            return False
        for stream in streams:
            if self.shared:
                # Another process may have committed an earlier message for this endpoint
                # that this one has not seen yet: read from the database, in order.
                stream.request_fetch()
            else:
                stream.offer(item, self.queue_limit)
        return True

    # -- chores ------------------------------------------------------------------------

    async def purge(self) -> int:
        expired = await self.storage.purge_push(epoch_ms())
        self.metrics.push["expired"] += expired
        return expired

    def _poll(self) -> Callable[[], Awaitable[object]]:
        seen_ms = epoch_ms()

        async def poll() -> None:
            nonlocal seen_ms
            now_ms = epoch_ms()
            changes = await self.storage.push_changes(seen_ms - POLL_OVERLAP_MS)
            seen_ms = now_ms
            for app_id, endpoint_id, seq in changes or ():
                for stream in self._streams.get((app_id, endpoint_id), ()):
                    # The overlap brings back messages a stream already has: only a
                    # stream behind the newest one reads the database again.
                    if stream.last_seq < seq:
                        stream.request_fetch()

        return poll

    async def _poll_others(self) -> None:
        """Check for messages other processes queued every POLL_INTERVAL, or as soon as
        the storage says there may be some (a NOTIFY on PostgreSQL)."""
        poll = self._poll()
        while True:
            try:
                await poll()
            except Exception:
                logger.exception("Push gateway poll failed; it runs again in %s s", POLL_INTERVAL)
                await asyncio.sleep(POLL_INTERVAL)
            await self.storage.push_wait(POLL_INTERVAL)

    async def _every(self, seconds: float, chore: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await chore()
            except Exception:
                logger.exception("Push gateway chore failed; it runs again in %s s", seconds)
            await asyncio.sleep(seconds)
