"""Retention: each application may keep its raw events for a number of days; the
sweeper deletes older ones in the background. Rollups are kept, so the dashboard's
history outlives the raw events.

Events expire by the UTC hour of their Timestamp (when they happened): an event of an
hour that began more than N days ago is deleted. The sweeper deletes at most BATCH_ROWS
rows per transaction, lowest hours first, and rests between two batches at least twice
as long as the last one took, so a collector's own writes keep going between them. With
several processes on one database (`serve --workers`, or several `serve`), the one that
holds the lease "retention" sweeps; another takes over once a lease is not renewed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from homing_collector.lifetime import holder_name, stop, wait_set
from homing_collector.storage.base import Storage
from homing_collector.storage.history import cutoff_hour

logger = logging.getLogger("homing_collector")

MAX_DAYS = 36_500
BATCH_ROWS = 5_000
INTERVAL = 60.0  # seconds between two sweeps
FIRST_SWEEP = 1.0  # seconds after the start
MIN_PAUSE = 0.05  # seconds between two batches, at least
LEASE = "retention"


class Sweeper:
    """The background task that deletes expired events; one per collector process."""

    def __init__(
        self,
        storage: Storage,
        *,
        interval: float = INTERVAL,
        batch_rows: int = BATCH_ROWS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.interval = interval
        self.batch_rows = batch_rows
        self.clock = clock
        self.owner = holder_name()
        self.deleted = 0  # rows, since the start
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        """Sweep now, not at the next interval: a retention period has just changed."""
        if self._wake is not None:
            self._wake.set()

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _run(self) -> None:
        # The pid of a forked worker is only known once it runs.
        self.owner = holder_name()
        await asyncio.sleep(FIRST_SWEEP)
        while True:
            try:
                now_ms = int(self.clock() * 1000)
                ttl_ms = int(self.interval * 3 * 1000)
                if await self.storage.take_lease(LEASE, self.owner, now_ms, ttl_ms):
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("The retention sweep failed; the next one will retry")
            assert self._wake is not None
            await wait_set(self._wake, self.interval)
            self._wake.clear()

    async def sweep(self) -> int:
        """Delete every expired event of every application; return how many."""
        total = 0
        for app_id, days in await self.storage.retention_policies():
            before = cutoff_hour(int(self.clock() * 1000), days)
            while True:
                started = time.monotonic()
                deleted = await self.storage.delete_expired_events(app_id, before, self.batch_rows)
                total += deleted
                self.deleted += deleted
                if deleted < self.batch_rows:
                    break
                await asyncio.sleep(max(MIN_PAUSE, 2 * (time.monotonic() - started)))
        if total:
            logger.info("Retention: deleted %d expired events", total)
        return total
