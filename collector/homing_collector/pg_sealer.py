"""The sealer of a collector on PostgreSQL: keeps its own columnar copy of events
(storage/pg_columnar.py) up to date.

A background task, like sealer.py's for SQLite. Each step, in a repeatable-read
transaction of its own (PostgresStorage.analytics_read):
- brings the sealed days to the step's snapshot (`pg_columnar.refresh`): the events they
  did not see go into a new file of theirs, a day of more than MOST_FILES files has them
  merged, and a day sealed across a deletion is no longer sealed;
- then copies one day that is not sealed, the latest first.
It steps again at once while there were days to copy, else after INTERVAL seconds: the
events a query reads from the events table are those of about one interval, and of the
days not copied yet. The copy is this collector's own: of the processes that share its
directory (`serve --workers`), the one that holds its lock file seals. Files that no
sealed day names any more are deleted GRACE seconds after the sealer first saw them, so
that a query that read the list just before still has its files.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING

from homing_collector.lifetime import stop
from homing_collector.sealer import FIRST_STEP, GRACE, INTERVAL, MOST_FILES, delete_unnamed
from homing_collector.storage import columnar, pg_columnar

if TYPE_CHECKING:
    from homing_collector.storage.postgres import PostgresStorage

logger = logging.getLogger("homing_collector")

LOCK = ".sealer.lock"


class PgSealer:
    """The background task that seals events into this collector's columnar copy."""

    def __init__(
        self,
        storage: PostgresStorage,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.interval = interval
        self.clock = clock
        self.sealed = 0  # events copied since the start
        self._seen: dict[Path, float] = {}  # unnamed files, when first seen
        self._swept = 0.0
        self._lock: IO[bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.storage.columnar is not None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        await stop(self._task)
        self._task = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _holds_lock(self, root: Path) -> bool:
        """Whether this process seals the copy at `root` (it holds its lock file)."""
        if self._lock is not None:
            return True
        try:
            import fcntl
        except ImportError:  # not on Linux or macOS: one process per directory
            return True
        root.mkdir(parents=True, exist_ok=True)
        file = (root / LOCK).open("ab")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            return False
        self._lock = file
        return True

    async def _run(self) -> None:
        await asyncio.sleep(FIRST_STEP)
        while True:
            busy = False
            try:
                root = self.storage.columnar
                if root is not None and await asyncio.to_thread(self._holds_lock, root):
                    busy = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Sealing events failed; the next step will retry")
            await asyncio.sleep(0.01 if busy else self.interval)

    async def step(self) -> bool:
        """Refresh the sealed days, then copy one that is not sealed; return whether there
        was one."""
        root = self.storage.columnar
        if root is None:
            return False
        copy = pg_columnar.Copy(root)
        if self.clock() - self._swept >= GRACE / 4:
            await self.sweep(root)
        await self.storage.analytics_read(
            partial(pg_columnar.refresh, copy=copy, most_files=MOST_FILES)
        )
        found = await self.storage.analytics_read(pg_columnar.days_with_events)
        sealed = await asyncio.to_thread(copy.days)
        for app_id, day in found:
            if (app_id, day) not in sealed:
                self.sealed += await self.storage.analytics_read(
                    partial(pg_columnar.seal_day, copy=copy, app_id=app_id, day=day)
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
        copy = pg_columnar.Copy(root)
        names = await asyncio.to_thread(copy.registered)
        found = await asyncio.to_thread(columnar.unregistered, root, names)
        self._seen, deleted = delete_unnamed(found, self._seen, now)
        return deleted
