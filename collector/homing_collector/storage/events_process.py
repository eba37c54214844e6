"""PutEvents batches written by a process of their own.

In one process, the event loop and SQLite's writer thread share the GIL: the writer gives
it up for every SQLite call and then waits to take it back while the loop runs Python, so
the two together use little more than one core. Here the collector hands each checked
batch (its rows, already laid out as columns) to a child process, which runs the same
writer code as the thread: it takes every batch waiting, writes them in one transaction,
commits, and only then answers. The collector answers 202 only after that answer, so
nothing is acknowledged before it is on disk.

The two processes talk over a socket pair, in frames of a 4-byte length and a pickle
(both ends are this package, so nothing untrusted is unpickled). The child ignores
SIGINT and SIGTERM, which a terminal or a service manager sends to the whole group: it
stops when the collector closes its end, once every batch sent has been answered, or
when the collector dies (Linux: PR_SET_PDEATHSIG; elsewhere, the socket's end of file).
Other writes (apps, keys, endpoints, ...) stay with the collector's own writer thread;
the two writers take turns on the database through the same file lock as
``serve --workers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homing_collector.lifetime import end_with_parent
from homing_collector.storage.base import (
    EndpointMerge,
    EndpointUpdate,
    IngestResult,
    Overloaded,
    StorageError,
    StorageFull,
    StorageUnavailable,
)

if TYPE_CHECKING:
    import sqlite3

    from homing_collector.analytics.pending import Staged
    from homing_collector.storage.sqlite import SQLiteStorage

logger = logging.getLogger("homing_collector")

_HEADER = struct.Struct("!I")
_READY = 0  # the job id of the child's first frame
_START_TIMEOUT = 30.0  # seconds for the child to open the database
_STOP_TIMEOUT = 60.0  # seconds for the child to exit once every batch is answered
_MAX_JOBS_PER_COMMIT = 512
# bench/collector_cpu.py: a commit of 1 batch of 100 events costs 14.3 us an event in the
# writer, of 8 batches 9.0. Waiting up to 3 ms for 8 made 4.7 batches a commit of 2.6 under
# collector_ingest.py's 16 clients.
GATHER = 8
GATHER_WAIT = 0.003  # seconds
_BUFFER_BYTES = 4 << 20


def frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _take_frames(buffer: bytearray, messages: list[Any], limit: int) -> None:
    """Move the whole frames at the start of `buffer` to `messages`, up to `limit` in all."""
    start = 0
    while len(buffer) - start >= _HEADER.size and len(messages) < limit:
        (size,) = _HEADER.unpack_from(buffer, start)
        end = start + _HEADER.size + size
        if len(buffer) < end:
            break
        messages.append(pickle.loads(memoryview(buffer)[start + _HEADER.size : end]))
        start = end
    del buffer[:start]


class EventsProcess:
    """The collector's end: sends batches, and wakes each caller when its batch is stored."""

    def __init__(self, path: Path, synchronous: str, max_pending: int, *, rollups: bool) -> None:
        self.path = path
        self.rollups = rollups
        self.synchronous = synchronous
        self.max_pending = max_pending
        self._process: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[None] | None = None
        self._lost = False
        self._closed: asyncio.Future[None] | None = None

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for sock in (ours, theirs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER_BYTES)
        command = [
            sys.executable, "-m", "homing_collector.storage.events_process",
            str(theirs.fileno()), str(self.path), self.synchronous, str(os.getpid()),
            "rollups" if self.rollups else "no-rollups",
        ]  # fmt: skip
        try:
            self._process = subprocess.Popen(
                command, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL
            )
        finally:
            theirs.close()
        self._ready = loop.create_future()
        self._closed = loop.create_future()
        try:
            self._transport, _ = await loop.create_unix_connection(
                lambda: _Protocol(self), sock=ours
            )
            await asyncio.wait_for(asyncio.shield(self._ready), _START_TIMEOUT)
        except BaseException:
            await self._reap(kill=True)
            raise

    def usable(self) -> bool:
        return not self._lost and asyncio.get_running_loop() is self._loop

    async def put_events(
        self,
        app_id: str,
        endpoints: Sequence[EndpointUpdate],
        values: list[Any],
        merge: EndpointMerge,
        max_event_types: int,
        max_user_endpoints: int,
        summary: Staged | None = None,
    ) -> IngestResult:
        if self._transport is None or self._lost:
            raise StorageUnavailable("the events writer process has stopped")
        if len(self._futures) >= self.max_pending:
            raise Overloaded(f"{len(self._futures)} writes are waiting")
        assert self._loop is not None
        job_id = next(self._ids)
        future: asyncio.Future[IngestResult] = self._loop.create_future()
        self._futures[job_id] = future
        self._transport.write(
            frame(
                (job_id, app_id, list(endpoints), values, merge, max_event_types,
                 max_user_endpoints, summary)
            )
        )  # fmt: skip
        # The write goes on even if the request is cancelled; only the answer is lost.
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Wait until every batch sent is answered, then stop the child."""
        if self._transport is not None and not self._lost:
            self._transport.write_eof()  # the child finishes what it has, then exits
            assert self._closed is not None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._closed), _STOP_TIMEOUT)
        await self._reap(kill=False)

    async def _reap(self, *, kill: bool) -> None:
        process, self._process = self._process, None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if process is None:
            return
        if kill:
            process.kill()
        try:
            await asyncio.get_running_loop().run_in_executor(None, process.wait, _STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.error("The events writer process did not stop; killing it")
            process.kill()
            process.wait()

    # -- called by the protocol ----------------------------------------------------------

    def _answer(self, message: Any) -> None:
        job_id, ok, value = message
        if job_id == _READY:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            return
        future = self._futures.pop(job_id, None)
        if future is None or future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def _connection_lost(self) -> None:
        self._lost = True
        error = StorageUnavailable("the events writer process stopped before it answered")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        if self._futures:
            logger.error(
                "The events writer process stopped; %d batches get an error", len(self._futures)
            )
        futures, self._futures = self._futures, {}
        for future in futures.values():
            if not future.done():
                future.set_exception(error)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: EventsProcess) -> None:
        self.owner = owner
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answers: list[Any] = []
        _take_frames(self.buffer, answers, sys.maxsize)
        for answer in answers:
            self.owner._answer(answer)

    def eof_received(self) -> bool | None:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._connection_lost()


# -- the child --------------------------------------------------------------------------


def read_frames(
    sock: socket.socket, buffer: bytearray, scratch: memoryview, idle: float | None = None
) -> tuple[list[Any], bool]:
    """Block for at least one frame, then take every whole frame that has arrived.
    Returns the messages and whether the collector has closed its end; no message if
    none came within `idle` seconds (None: no limit).

    When batches keep coming (one was already waiting), wait up to GATHER_WAIT for
    GATHER of them: each commit has a fixed cost, which more batches share. A batch that
    finds the writer idle is written at once."""
    messages: list[Any] = []
    eof = False
    busy: bool | None = None  # whether the first batch was waiting already
    gather_until = 0.0
    idle_until = None if idle is None else time.monotonic() + idle
    while True:
        _take_frames(buffer, messages, _MAX_JOBS_PER_COMMIT)
        if eof or len(messages) >= _MAX_JOBS_PER_COMMIT:
            return messages, eof
        if messages and busy is None:
            busy = True
            gather_until = time.monotonic() + GATHER_WAIT
        timeout: float | None = 0.0
        if not messages and busy is not None:
            # Idle: block until a batch comes, and write it at once.
            if idle_until is not None:
                timeout = idle_until - time.monotonic()
                if timeout <= 0.0:
                    return messages, False
            else:
                timeout = None
        elif messages and busy and len(messages) < GATHER:
            timeout = max(0.0, gather_until - time.monotonic())
        sock.settimeout(timeout)
        try:
            received = sock.recv_into(scratch)
        except (BlockingIOError, TimeoutError):
            if messages:
                return messages, False
            busy = False
            continue
        if not received:
            eof = True
        buffer += scratch[:received]


def take_waiting(
    sock: socket.socket, buffer: bytearray, scratch: memoryview, messages: list[Any]
) -> bool:
    """Add to `messages` every whole frame that has arrived, without waiting for more
    (up to _MAX_JOBS_PER_COMMIT in all). Returns whether the collector has closed its end."""
    sock.settimeout(0.0)
    while True:
        _take_frames(buffer, messages, _MAX_JOBS_PER_COMMIT)
        if len(messages) >= _MAX_JOBS_PER_COMMIT:
            return False
        try:
            received = sock.recv_into(scratch)
        except (BlockingIOError, TimeoutError):
            return False
        if not received:
            return True
        buffer += scratch[:received]


def serve(sock: socket.socket, storage: SQLiteStorage, conn: sqlite3.Connection) -> None:
    """Write the batches that come over `sock` until the collector closes its end, and
    answer each once its transaction is committed.

    Another writer (the collector's own thread, another worker's events writer) may hold
    the database when a commit is due: the batches that arrive while this one waits for
    it go in the same commit, taken once it holds it. Under serve --workers the writers
    take turns, so that each commit holds what came during the other's."""
    buffer = bytearray()
    scratch = memoryview(bytearray(_BUFFER_BYTES))
    eof = False
    while not eof:
        # The rollups' entries are folded in a transaction of their own once due, between
        # commits, or when no batch came meanwhile.
        messages, eof = read_frames(sock, buffer, scratch, storage.fold_wait())
        if messages:
            with storage.writers_held():
                if not eof:
                    eof = take_waiting(sock, buffer, scratch, messages)
                jobs = [(storage.put_events_job(*message[1:]), False) for message in messages]
                outcomes = storage.commit_jobs(conn, jobs)
            replies = []
            for message, (value, ok) in zip(messages, outcomes, strict=True):
                if not ok and not isinstance(value, StorageFull):
                    value = StorageError(f"{type(value).__name__}: {value}")
                replies.append(frame((message[0], ok, value)))
            sock.setblocking(True)
            sock.sendall(b"".join(replies))
        if storage.fold_wait() == 0.0:
            storage.fold_entries(conn)
    if storage.fold_wait() is not None:  # what is left, rather than leave it to the next
        storage.fold_entries(conn, everything=True)


def main(argv: list[str]) -> int:
    from homing_collector.storage.sqlite import SQLiteStorage

    fd, path, synchronous, parent = int(argv[0]), argv[1], argv[2], int(argv[3])
    rollups = argv[4] == "rollups"
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    end_with_parent(parent, signal.SIGKILL)
    logging.basicConfig(format="%(levelname)s homing_collector events writer: %(message)s")
    sock = socket.socket(fileno=fd)
    storage = SQLiteStorage(path, synchronous=synchronous, rollups=rollups)
    conn = storage.open_writer(migrate_schema=False)  # the collector has migrated it
    sock.sendall(frame((_READY, True, None)))
    serve(sock, storage, conn)
    storage.close_writer(conn)
    sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
