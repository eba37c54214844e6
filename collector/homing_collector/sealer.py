"""The sealer: keeps the columnar copy of events (storage/columnar.py) up to date.

A background task of the collector. Each step does the first of these that has work:
- copy the events that arrived since the last step into new files of their sealed days
  (so what queries read from SQLite stays small: the events of about one interval);
- merge the files of a day that has more than MOST_FILES into one;
- copy a day that is not sealed (a day of events stored before the copy existed, the
  latest first, or one a deletion unsealed) into one file, and seal it.
It steps again at once while there is work, else after INTERVAL seconds. With several
processes on one database, the one that holds the lease "columnar" seals. Files that no
sealed day names any more are deleted GRACE seconds after the sealer first saw them, so
a query that read the list just before has its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from homing_collector.lifetime import holder_name, stop
from homing_collector.storage import columnar
from homing_collector.storage.base import Storage

logger = logging.getLogger("homing_collector")

INTERVAL = 10.0  # seconds between two steps when there was nothing to do
FIRST_STEP = 2.0  # seconds after the start
APPEND_ROWS = 250_000  # events copied per step at most
MOST_FILES = 8  # files of a day before they are merged
GRACE = 300.0  # seconds an unnamed file is kept after it is first seen
LEASE = "columnar"
LEASE_MS = 300_000  # a step may copy a whole day


class Sealer:
    """The background task that seals events into the columnar copy."""

    def __init__(
        self,
        storage: Storage,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.interval = interval
        self.clock = clock
        self.owner = holder_name()
        self.sealed = 0  # events copied since the start (a day rebuilt counts again)
        self._seen: dict[Path, float] = {}  # unnamed files, when first seen
        self._swept = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.storage.columnar is not None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _run(self) -> None:
        # The pid of a forked worker is only known once it runs.
        self.owner = holder_name()
        await asyncio.sleep(FIRST_STEP)
        while True:
            busy = False
            try:
                now_ms = int(self.clock() * 1000)
                if await self.storage.take_lease(LEASE, self.owner, now_ms, LEASE_MS):
                    busy = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Sealing events failed; the next step will retry")
            await asyncio.sleep(0.01 if busy else self.interval)

    async def step(self) -> bool:
        """Do the first thing that needs doing; return whether there was one."""
        root = self.storage.columnar
        if root is None:
            return False
        if self.clock() - self._swept >= GRACE / 4:
            await self.sweep(root)
        # Partials of columnar's functions, not lambdas: the storage may make the copy in
        # another process (storage/columnar_process.py).
        appended = await self.storage.seal_events(
            partial(columnar.append, root=root, limit=APPEND_ROWS)
        )
        if appended:
            return True
        crowded = await self.storage.analytics_read(
            lambda conn: columnar.crowded_days(conn, MOST_FILES)
        )
        if crowded:
            app_id, day, files = crowded[0]
            await self.storage.seal_events(
                partial(columnar.merge, root=root, app_id=app_id, day=day, files=files)
            )
            return True
        unsealed = await self.storage.analytics_read(
            lambda conn: columnar.unsealed_days(conn, root)
        )
        if unsealed:
            app_id, day = unsealed[0]
            await self.storage.seal_events(
                partial(columnar.rebuild, root=root, app_id=app_id, day=day)
            )
            return True
        return False

    async def seal_all(self) -> None:
        """Step until nothing is left to do (tests and the bench)."""
        while await self.step():
            pass

    async def sweep(self, root: Path) -> int:
        """Delete the files no sealed day has named for GRACE seconds; return how many."""
        self._swept = now = self.clock()
        names = await self.storage.analytics_read(columnar.registered)
        found = await asyncio.to_thread(columnar.unregistered, root, names)
        self._seen, deleted = delete_unnamed(found, self._seen, now)
        return deleted


def delete_unnamed(
    found: list[Path], seen: dict[Path, float], now: float
) -> tuple[dict[Path, float], int]:
    """Delete the files of `found` (named by no sealed day) first seen GRACE seconds or
    more before `now`; return when each other one was first seen, and how many went."""
    kept, deleted = {}, 0
    for path in found:
        first = seen.get(path, now)
        if now - first >= GRACE:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                deleted += 1
        else:
            kept[path] = first
    return kept, deleted
