"""The sealer's copies (storage/columnar.py) made in a process of their own.

Copying an event into the columnar copy costs about half the CPU that storing it does
(bench/collector_cpu.py), and part of it is Python: in the collector's process it would
take the GIL from the event loop that answers PutEvents. Here a child makes each copy on
a read snapshot of its own and hands back what it wrote; the collector commits it as
before (SQLiteStorage.seal_events), so a copy cut short commits nothing, and its files,
which no sealed day names, are swept. The child runs at a lower priority (NICENESS): the
copy is background work, and catches up when ingest leaves the CPU to it; until then,
queries read the events past the watermark from SQLite, as they always may.

The two processes talk over the child's stdin and stdout, in frames of a 4-byte length
and a pickle (both ends are this package, so nothing untrusted is unpickled): the work,
a picklable callable of a read connection (a functools.partial of a function of
columnar.py), then its outcome. The child ignores SIGINT and SIGTERM, which a terminal or
a service manager sends to the whole group, so that a stop logs no failed copy: the
collector kills it as it closes, and it dies with the collector (Linux: PR_SET_PDEATHSIG;
elsewhere, at the end of its stdin).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import sqlite3
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homing_collector.lifetime import end_with_parent
from homing_collector.storage.base import StorageError

if TYPE_CHECKING:
    from homing_collector.storage.columnar import Sealed

logger = logging.getLogger("homing_collector")

_HEADER = struct.Struct("!I")
NICENESS = 10
_STOP_TIMEOUT = 10.0


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


class ColumnarProcess:
    """The collector's end: runs one copy at a time in the child, started when first
    needed and again after it dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        """The child's process id, while there is one."""
        return self._process.pid if self._process is not None else None

    async def run(self, work: Callable[[sqlite3.Connection], Sealed | None]) -> Sealed | None:
        request = _frame(work)
        async with self._lock:
            process = await self._started()
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(request)
                await process.stdin.drain()
                (size,) = _HEADER.unpack(await process.stdout.readexactly(_HEADER.size))
                ok, value = pickle.loads(await process.stdout.readexactly(size))
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                await self._kill()
                raise StorageError(f"the columnar copy's process stopped: {exc!r}") from None
            except BaseException:  # cancelled mid-copy: the answer would come to the next
                await self._kill()
                raise
        if not ok:
            raise value
        result: Sealed | None = value
        return result

    async def start(self) -> None:
        """Start the child now rather than at the first copy (it imports DuckDB)."""
        async with self._lock:
            await self._started()

    async def _started(self) -> asyncio.subprocess.Process:
        process = self._process
        if process is None or process.returncode is not None:
            process = self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "homing_collector.storage.columnar_process",
                str(self.path), str(os.getpid()),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
        return process

    async def close(self) -> None:
        """Stop the child; a copy it was making is thrown away (its files are swept)."""
        async with self._lock:
            await self._kill()

    async def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)


# -- the child --------------------------------------------------------------------------


def _read(stream: Any, size: int) -> bytes | None:
    data = stream.read(size)
    if len(data) < size:
        return None  # the collector closed its end
    return bytes(data)


def main(argv: list[str]) -> int:
    path, parent = Path(argv[0]), int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    end_with_parent(parent, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    logging.basicConfig(format="%(levelname)s homing_collector columnar copy: %(message)s")
    # What every copy needs, imported while the collector starts rather than at the first.
    from homing_collector.storage import columnar  # noqa: F401

    with contextlib.suppress(ImportError):
        import duckdb  # noqa: F401
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # the answers alone go to stdout
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA cache_size = -65536")
    try:
        while (header := _read(requests, _HEADER.size)) is not None:
            (size,) = _HEADER.unpack(header)
            data = _read(requests, size)
            if data is None:
                break
            try:
                answer = (True, pickle.loads(data)(conn))
            except Exception as exc:
                if conn.in_transaction:
                    conn.rollback()
                answer = (False, StorageError(f"{type(exc).__name__}: {exc}"))
            answers.write(_frame(answer))
            answers.flush()
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
