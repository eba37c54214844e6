"""The queue of events waiting for upload: one SQLite file, safe across threads and processes.

Rows are claimed for upload inside a ``BEGIN IMMEDIATE`` transaction with a lease
(``claimed_by``/``claimed_until``), so two processes sharing a data dir never hand out
the same row at once; a crashed process's claim expires and the row is sent again,
which the collector's deduplication by event id makes harmless.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from homing._types import Clock

logger = logging.getLogger("homing")

# Bytes a row costs beyond its body (rowid, ids, lease columns, b-tree slack); used to
# keep the size cap close to the file size without asking SQLite on every insert.
ROW_OVERHEAD = 100
# How many inserts may pass before the approximate size is checked against SQLite again.
_RESYNC_EVERY = 1000
# How many inserts may pass without a checkpoint before put() does one inline.
_INLINE_CHECKPOINT = 20_000
# Connections that outlived a fork: closing them in the child could disturb the parent's
# locks and WAL, so the child keeps them referenced and never touches them again.
_ABANDONED: list[sqlite3.Connection] = []

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    claimed_by TEXT,
    claimed_until REAL NOT NULL DEFAULT 0
);
"""
_INSERT = "INSERT INTO events (event_id, body, size) VALUES (?, ?, ?)"
_SUM = "SELECT coalesce(sum(size), 0) FROM events"


@dataclass(frozen=True)
class Row:
    id: int
    event_id: str
    body: bytes


class Store:
    # An SQLite queue of serialized events; `path=None` keeps it in memory.

    def __init__(
        self,
        path: Path | None,
        *,
        max_bytes: int = 5 * 1024 * 1024,
        clock: Clock = time.time,
        lease: float = 60.0,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.max_bytes = max_bytes
        self.clock = clock
        self.lease = lease
        self.dropped: dict[str, int] = {}
        self._lock = threading.Lock()
        # Held by maintain() while it uses `_maint`, and by close(): a connection closed
        # under a query running on another thread can crash the interpreter. Taken
        # before `_lock`, never after it.
        self._maint_lock = threading.Lock()
        self._host = socket.gethostname()
        self._new_owner()
        self._maint: sqlite3.Connection | None = None
        self._closed = False
        self._conn = self._open()
        self._since_checkpoint = 0
        self._since_resync = 0
        self._added = 0
        self._approx = self._measure()

    # -- opening, corruption, fork ------------------------------------------------------

    def _new_owner(self) -> None:
        self.owner = f"{self._host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            return self._connect(":memory:")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect(str(self.path))
            conn.execute("SELECT count(*) FROM events WHERE id < 0").fetchone()
            self._release_dead_claims(conn)
            return conn
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                return self._replace(exc)
            # Another process holds the file: it is sound, never move it aside.
            logger.warning("homing: the event store %s is locked (%s); keeping events in "
                           "memory until the app restarts", self.path, exc)  # fmt: skip
            self.path = None
            return self._connect(":memory:")
        except sqlite3.DatabaseError as exc:
            return self._replace(exc)
        except OSError as exc:
            logger.warning("homing: cannot open the event store %s (%s); keeping events "
                           "in memory until the app restarts", self.path, exc)  # fmt: skip
            self.path = None
            return self._connect(":memory:")

    def _connect(self, target: str) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN ourselves, so a lone INSERT autocommits.
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        # Each commit appends its changed page to the WAL: a row is ~300 bytes, so a
        # 1 KiB page writes a quarter of what the 4 KiB default would (new files only).
        conn.execute("PRAGMA page_size = 1024")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        # A WAL left large after a burst would otherwise count against the disk forever.
        conn.execute("PRAGMA journal_size_limit = 4194304")
        # Checkpoints run in maintain(), on the uploader thread: see there.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.executescript(_SCHEMA)
        return conn

    def _replace(self, exc: BaseException) -> sqlite3.Connection:
        # Move a corrupt store aside and start a fresh one: the app must keep running.
        assert self.path is not None
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        logger.warning("homing: the event store %s is unreadable (%s); moved it to %s and "
                       "started a fresh one", self.path, exc, aside)  # fmt: skip
        self.dropped["store_corrupt"] = self.dropped.get("store_corrupt", 0) + 1
        try:
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    source.rename(f"{aside}{suffix}")
            return self._connect(str(self.path))
        except (OSError, sqlite3.DatabaseError) as second:
            logger.warning("homing: cannot start a fresh store at %s (%s); keeping events "
                           "in memory", self.path, second)  # fmt: skip
            self.path = None
            return self._connect(":memory:")

    def _release_dead_claims(self, conn: sqlite3.Connection) -> None:
        # Free rows claimed by a process of this host that no longer runs (kill -9).
        owners = conn.execute(
            "SELECT DISTINCT claimed_by FROM events WHERE claimed_by IS NOT NULL"
        ).fetchall()
        for (owner,) in owners:
            host, _, rest = owner.partition(":")
            pid = rest.partition(":")[0]
            if host == self._host and pid.isdigit() and not _alive(int(pid)):
                conn.execute(
                    "UPDATE events SET claimed_by = NULL, claimed_until = 0 WHERE claimed_by = ?",
                    (owner,),
                )

    def after_fork_in_child(self) -> None:
        _ABANDONED.append(self._conn)
        if self._maint is not None:
            _ABANDONED.append(self._maint)
            self._maint = None
        self._lock = threading.Lock()
        self._maint_lock = threading.Lock()
        self._new_owner()
        self._conn = self._open()

    def close(self) -> None:
        with self._maint_lock, self._lock, contextlib.suppress(sqlite3.Error):
            self._closed = True
            if self._maint is not None:
                self._maint.close()
            # A clean close checkpoints and removes the WAL.
            self._conn.execute("PRAGMA wal_autocheckpoint = 1000")
            self._conn.close()

    # -- the queue ----------------------------------------------------------------------

    def put(self, event_id: str, body: bytes) -> bool:
        # Append one event; returns once the row is committed, or False if the store was
        # closed (a record racing close()), which is no reason to think the file corrupt.
        size = len(body) + ROW_OVERHEAD
        with self._lock:
            if self._closed:
                return False
            try:
                self._conn.execute(_INSERT, (event_id, body, size))
            except (sqlite3.OperationalError, sqlite3.ProgrammingError):
                raise  # busy, full, or a misuse: the file itself is sound
            except sqlite3.DatabaseError as exc:
                self._conn = self._replace(exc)
                self._conn.execute(_INSERT, (event_id, body, size))
            self._approx += size
            self._added += size
            self._since_checkpoint += 1
            self._since_resync += 1
            # Normally the uploader thread runs maintain(); these are the fallbacks for
            # when it cannot keep up (e.g. it waits on a hung request).
            if self._since_checkpoint >= _INLINE_CHECKPOINT and self.path is not None:
                self._since_checkpoint = 0
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            if self._approx > self.max_bytes * 1.25:
                self._resync(self._conn)
        return True

    def maintain(self) -> None:
        # Checkpoint the WAL and enforce the size cap, off the recording thread.
        #
        # Checkpoints fsync, which can take milliseconds: done inline they would be the
        # p99 of record_event. The uploader thread runs this with its own connection,
        # which also reads the size without holding up puts (WAL readers never block).
        with self._maint_lock:
            if not self._closed:
                self._maintain()

    def _maintain(self) -> None:
        if self.path is None:
            if self._approx > self.max_bytes or self._since_resync >= _RESYNC_EVERY:
                with self._lock:
                    self._resync(self._conn)
            return
        if self._maint is None:
            self._maint = self._connect(str(self.path))
        if self._since_checkpoint:
            self._since_checkpoint = 0
            self._maint.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if self._approx > self.max_bytes or self._since_resync >= _RESYNC_EVERY:
            added = self._added
            total = int(self._maint.execute(_SUM).fetchone()[0])
            with self._lock:
                self._approx = total + self._added - added
                self._since_resync = 0
                if self._approx > self.max_bytes:
                    self._resync(self._maint)

    def _resync(self, conn: sqlite3.Connection) -> None:
        self._since_resync = 0
        self._approx = int(conn.execute(_SUM).fetchone()[0])
        if self._approx > self.max_bytes:
            self._evict(conn)

    def _measure(self) -> int:
        return int(self._conn.execute(_SUM).fetchone()[0])

    def _evict(self, conn: sqlite3.Connection) -> None:
        # Down to 90% of the cap, so that a full store does not evict on every insert.
        excess = self._approx - int(self.max_bytes * 0.9)
        freed = 0
        last = None
        evicted = 0
        for row_id, size in conn.execute("SELECT id, size FROM events ORDER BY id"):
            freed += size
            last = row_id
            evicted += 1
            if freed >= excess:
                break
        if last is None:
            return
        conn.execute("DELETE FROM events WHERE id <= ?", (last,))
        self._approx -= freed
        self.dropped["storage_full"] = self.dropped.get("storage_full", 0) + evicted
        logger.warning("homing: the event store is full (%d bytes); dropped the %d oldest "
                       "events", self.max_bytes, evicted)  # fmt: skip

    def is_empty(self) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM events LIMIT 1").fetchone() is None

    def counts(self) -> tuple[int, dict[str, int]]:
        # Queued and dropped read together, so an eviction between them is never half seen.
        with self._lock:
            row = self._conn.execute("SELECT count(*) FROM events").fetchone()
            return int(row[0]), dict(self.dropped)

    def count(self, *, claimable_only: bool = False) -> int:
        with self._lock:
            if claimable_only:
                sql = "SELECT count(*) FROM events WHERE claimed_until <= ?"
                row = self._conn.execute(sql, (self.clock(),)).fetchone()
            else:
                row = self._conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0])

    def claim(self, max_events: int, max_bytes: int) -> list[Row]:
        # Lease up to `max_events` rows (at most `max_bytes` of bodies) to this process.
        now = self.clock()
        rows: list[Row] = []
        with self._lock, self._transaction():
            total = 0
            cursor = self._conn.execute(
                "SELECT id, event_id, body FROM events WHERE claimed_until <= ? "
                "ORDER BY id LIMIT ?",
                (now, max_events),
            )
            for row_id, event_id, body in cursor:
                # Always take one row, so that one oversized event cannot block the queue.
                if rows and total + len(body) > max_bytes:
                    break
                total += len(body) + len(event_id) + 4
                rows.append(Row(row_id, event_id, body))
            if rows:
                self._conn.executemany(
                    "UPDATE events SET claimed_by = ?, claimed_until = ? WHERE id = ?",
                    [(self.owner, now + self.lease, row.id) for row in rows],
                )
        return rows

    def delete(self, rows: list[Row]) -> None:
        if not rows:
            return
        with self._lock, self._transaction():
            # By event id too: SQLite reuses the rowid of a deleted last row, so a stale
            # batch (answered after its lease ran out) must not delete a newer event.
            self._conn.executemany(
                "DELETE FROM events WHERE id = ? AND event_id = ?",
                [(r.id, r.event_id) for r in rows],
            )
            # Approximate: a row evicted meanwhile is subtracted twice until the next resync.
            self._approx -= sum(len(r.body) + ROW_OVERHEAD for r in rows)

    def release(self, rows: list[Row]) -> None:
        # Give claimed rows back, e.g. after a failed request, so they are sent later.
        if not rows:
            return
        with self._lock, self._transaction():
            self._conn.executemany(
                "UPDATE events SET claimed_by = NULL, claimed_until = 0 "
                "WHERE id = ? AND event_id = ? AND claimed_by = ?",
                [(r.id, r.event_id, self.owner) for r in rows],
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
