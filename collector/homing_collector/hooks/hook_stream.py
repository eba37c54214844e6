"""In-process event-stream hooks: every stored event, as Pinpoint's event-stream records,
given to each registered `event_stream` hook, at least once, in the order stored.

Each hook has a durable cursor of its own, by name, over the events of every application
(storage: hook_cursors): a pass reads the events after it, makes them records (in the
storage's reading thread, with the same to_record as the webhook streams), gives them to
the hook, and only then moves the cursor past them. A kill in between gives the batch
again after the restart; a hook that fails gets it again after a backoff, so nothing is
skipped while it is broken (its lag is in /metrics). A new name starts with the events
stored after its first start. With several processes on one database (`serve
--workers`), the one that holds the lease "hook-stream:<name>" calls the hook.

Nothing here runs unless an event_stream hook is registered: ingest costs nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from homing_collector.hooks.records import to_record
from homing_collector.hooks.registry import NamedHook
from homing_collector.hooks.runner import HookRunner
from homing_collector.lifetime import holder_name
from homing_collector.storage.base import HookRow, Storage

logger = logging.getLogger("homing_collector")

BATCH_EVENTS = 1000  # records per call at most
IDLE_INTERVAL = 0.2  # seconds between passes when there was nothing new
LEASE_TTL = 30.0  # seconds a process holds a hook's stream without renewing
LEASE_RETRY = 5.0  # seconds between two tries of a process that does not hold it
FIRST_BACKOFF = 1.0  # seconds before a failed batch is given again, doubling
MAX_BACKOFF = 60.0
LAG_INTERVAL = 5.0  # seconds between two readings of the lag gauges


def make_records(
    rows: list[HookRow], endpoints: dict[tuple[str, str], bytes]
) -> list[dict[str, Any]]:
    """What the storage's thread runs on the rows it read: the records, in order."""
    parsed: dict[tuple[str, str], Any] = {}
    records = []
    for row in rows:
        key = (row.app_id, row.endpoint_id)
        try:
            if key not in parsed:
                body = endpoints.get(key)
                parsed[key] = orjson.loads(body) if body is not None else None
            records.append(
                to_record(
                    row.app_id,
                    row.endpoint_id,
                    row.event_id,
                    orjson.loads(row.body),
                    parsed[key],
                    row.arrival_ms,
                )
            )
        except Exception:  # a row stored by an older version, say: skipped, not stuck
            logger.exception("event-stream hook: event %s cannot be made a record", row.event_id)
    return records


class HookStreams:
    """One background task per event_stream hook of the runner's registry."""

    def __init__(
        self,
        storage: Storage,
        runner: HookRunner,
        *,
        clock: Callable[[], float] = time.time,
        idle_interval: float = IDLE_INTERVAL,
        batch_events: int = BATCH_EVENTS,
    ) -> None:
        self.storage = storage
        self.runner = runner
        self.clock = clock
        self.idle_interval = idle_interval
        self.batch_events = batch_events
        self.owner = ""
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        hooks = self.runner.registry.of("event_stream")
        if not hooks:
            return
        # The pid of a forked worker is only known once it runs.
        self.owner = holder_name()
        # Before the collector answers: a new hook's cursor starts after the events stored
        # until now, so the events of the first requests are the hook's.
        await self.storage.open_hook_cursors([hook.name for hook in hooks])
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(hook)) for hook in hooks]
        self._tasks.append(loop.create_task(self._gauges([hook.name for hook in hooks])))

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if tasks:
            # Give the leases up, so that the collector started next, or another worker,
            # takes the streams over at once rather than when the leases run out: renewed
            # until a millisecond ago, a lease is free (and another's is left alone).
            now_ms = int(self.clock() * 1000)
            for hook in self.runner.registry.of("event_stream"):
                try:
                    await self.storage.take_lease(_lease(hook), self.owner, now_ms, -1)
                except Exception:
                    logger.exception("event-stream hook %r: could not give its lease up", hook.name)

    async def _run(self, hook: NamedHook) -> None:
        lease = _lease(hook)
        held_until = 0.0
        backoff = FIRST_BACKOFF
        retry_at = 0.0  # after a failure: when the hook gets its batch again
        while True:
            pause = self.idle_interval
            try:
                now = self.clock()
                # Renewed a third of the way through, so that a pass never outlives it;
                # between renewals the stream costs no write.
                if held_until - now < LEASE_TTL * 2 / 3:
                    held = await self.storage.take_lease(
                        lease, self.owner, int(now * 1000), int(LEASE_TTL * 1000)
                    )
                    held_until = now + LEASE_TTL if held else 0.0
                if not held_until:
                    pause = LEASE_RETRY  # another process calls the hook; each try is a write
                elif now < retry_at:
                    # Waiting in steps, to renew the lease: a backoff outlasts it.
                    pause = min(retry_at - now, LEASE_TTL / 3)
                else:
                    outcome = await self.pass_once(hook)
                    if outcome is None:
                        retry_at = self.clock() + backoff
                        pause = min(backoff, LEASE_TTL / 3)
                        backoff = min(backoff * 2, MAX_BACKOFF)
                    else:
                        backoff = FIRST_BACKOFF
                        if outcome:
                            continue  # more may be waiting
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("event-stream hook %r: a pass failed; trying again", hook.name)
            await asyncio.sleep(pause)

    async def pass_once(self, hook: NamedHook) -> bool | None:
        """Give the hook the next batch; True if the cursor moved, False if there was
        nothing new, None if the hook failed (the batch waits)."""
        records, cursor, to = await self.storage.read_hook_stream(
            hook.name, self.batch_events, make_records
        )
        if to == cursor:
            return False
        if records and not await self.runner.event_stream(hook, records):
            return None
        if not await self.storage.advance_hook_cursor(hook.name, cursor, to):
            logger.warning(
                "event-stream hook %r: another process moved its cursor; was its lease lost?",
                hook.name,
            )
        return True

    async def _gauges(self, names: list[str]) -> None:
        while True:
            try:
                self.runner.metrics.hook_stream_lag.update(await self.storage.hook_lag(names))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("event-stream hooks: could not read their lag")
            await asyncio.sleep(LAG_INTERVAL)


def _lease(hook: NamedHook) -> str:
    return f"hook-stream:{hook.name}"
