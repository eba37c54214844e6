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
the two writers take turns on the database through a file lock.

``serve --workers N`` starts one such writer for all its workers (start_shared), with a
socket pair for each, before it forks them: one writer keeps its cache of the database
and commits the batches of every worker together, where a writer per worker would take
turns with the others, each finding the pages they changed gone from its cache. It
stops once every worker has closed its end, or died; a worker that dies costs the
others nothing, and if the writer dies each worker goes on writing in its own process,
as a lone collector does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import select
import selectors
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

    def __init__(
        self,
        path: Path,
        synchronous: str,
        max_pending: int,
        *,
        rollups: bool,
        connection: socket.socket | None = None,
    ) -> None:
        self.path = path
        self.rollups = rollups
        self.synchronous = synchronous
        self.max_pending = max_pending
        # This collector's end of a writer that another process started (start_shared),
        # if any: then it starts none of its own.
        self._connection = connection
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
        if self._connection is not None:
            ours, self._connection = self._connection, None
        else:
            self._process, [ours] = _spawn(
                self.path, self.synchronous, 1, os.getpid(), rollups=self.rollups
            )
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


def start_shared(
    path: Path, synchronous: str, count: int, *, rollups: bool
) -> tuple[subprocess.Popen[bytes], list[socket.socket]]:
    """Start one events writer for `count` collectors (the workers of serve --workers),
    and return it with each collector's end of its connection (EventsProcess's
    `connection`). It stops once every collector has closed its end, or died."""
    return _spawn(path, synchronous, count, 0, rollups=rollups)


def _spawn(
    path: Path, synchronous: str, count: int, parent: int, *, rollups: bool
) -> tuple[subprocess.Popen[bytes], list[socket.socket]]:
    ours: list[socket.socket] = []
    theirs: list[socket.socket] = []
    try:
        for _ in range(count):
            pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            for sock in pair:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER_BYTES)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER_BYTES)
            ours.append(pair[0])
            theirs.append(pair[1])
        fds = [sock.fileno() for sock in theirs]
        command = [
            sys.executable, "-m", "homing_collector.storage.events_process",
            ",".join(map(str, fds)), str(path), synchronous, str(parent),
            "rollups" if rollups else "no-rollups",
        ]  # fmt: skip
        process = subprocess.Popen(command, pass_fds=fds, stdin=subprocess.DEVNULL)
    except BaseException:
        for sock in ours:
            sock.close()
        raise
    finally:
        for sock in theirs:
            sock.close()
    return process, ours


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


class _Link:
    """The writer's end of one collector's connection, and what came over it unread."""

    __slots__ = ("buffer", "eof", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.eof = False  # the collector has closed its end (or died)


class Links:
    """The connections of the collectors whose batches this writer stores: one, or one
    per worker of serve --workers. Batches are taken from all of them for each commit,
    and each answer goes back over the connection its batch came by."""

    def __init__(self, socks: Sequence[socket.socket]) -> None:
        self.selector = selectors.DefaultSelector()
        self.open: list[_Link] = []
        for sock in socks:
            sock.setblocking(False)
            link = _Link(sock)
            self.selector.register(sock, selectors.EVENT_READ, link)
            self.open.append(link)
        self.scratch = memoryview(bytearray(_BUFFER_BYTES))

    def _take(self, messages: list[tuple[_Link, Any]], limit: int) -> None:
        for link in self.open:
            if len(messages) >= limit:
                return
            if len(link.buffer) < _HEADER.size:
                continue
            taken: list[Any] = []
            _take_frames(link.buffer, taken, limit - len(messages))
            messages.extend((link, message) for message in taken)

    def _receive(self, timeout: float | None) -> bool:
        """Read what has arrived, waiting up to `timeout` seconds (None: no limit) for
        something to; whether anything did (or a collector closed its end)."""
        ready = self.selector.select(timeout)
        for key, _ in ready:
            link: _Link = key.data
            try:
                received = link.sock.recv_into(self.scratch)
            except BlockingIOError:
                continue
            except OSError:  # reset: the collector died
                received = 0
            if received:
                link.buffer += self.scratch[:received]
            else:
                self._ended(link)
        return bool(ready)

    def _ended(self, link: _Link) -> None:
        if not link.eof:
            link.eof = True
            self.selector.unregister(link.sock)

    def read(self, idle: float | None = None) -> tuple[list[tuple[_Link, Any]], bool]:
        """Block for at least one frame, then take every whole frame that has arrived.
        Returns the messages, each with its link, and whether a collector has closed its
        end; no message if none came within `idle` seconds (None: no limit).

        When batches keep coming (one was already waiting), wait up to GATHER_WAIT for
        GATHER of them: each commit has a fixed cost, which more batches share. A batch
        that finds the writer idle is written at once."""
        messages: list[tuple[_Link, Any]] = []
        busy: bool | None = None  # whether the first batch was waiting already
        gather_until = 0.0
        idle_until = None if idle is None else time.monotonic() + idle
        while True:
            self._take(messages, _MAX_JOBS_PER_COMMIT)
            ended = any(link.eof for link in self.open)
            if ended or len(messages) >= _MAX_JOBS_PER_COMMIT:
                return messages, ended
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
            if not self._receive(timeout):
                if messages:
                    return messages, False
                busy = False

    def take_waiting(self, messages: list[tuple[_Link, Any]]) -> None:
        """Add to `messages` every whole frame that has arrived, without waiting for more
        (up to _MAX_JOBS_PER_COMMIT in all)."""
        while True:
            self._take(messages, _MAX_JOBS_PER_COMMIT)
            if len(messages) >= _MAX_JOBS_PER_COMMIT or not self._receive(0.0):
                return

    def answer(self, link: _Link, replies: bytes) -> None:
        """Send `replies` over `link`, waiting as long as its collector does not read; a
        collector that died gets none."""
        view = memoryview(replies)
        try:
            while view:
                try:
                    view = view[link.sock.send(view) :]
                except BlockingIOError:
                    select.select([], [link.sock], [])
        except OSError:  # the collector died: nothing to answer, nothing more to read
            self._ended(link)
            link.buffer.clear()

    def close_ended(self) -> None:
        """Close the links whose collectors closed their ends, once every batch they
        sent is answered: their collectors then know they are done."""
        for link in [link for link in self.open if link.eof]:
            if _whole_frame(link.buffer):
                continue
            self.open.remove(link)
            link.sock.close()


def _whole_frame(buffer: bytearray) -> bool:
    if len(buffer) < _HEADER.size:
        return False
    size: int = _HEADER.unpack_from(buffer, 0)[0]
    return len(buffer) >= _HEADER.size + size


def serve(links: Links, storage: SQLiteStorage, conn: sqlite3.Connection) -> None:
    """Write the batches that come over `links` until every collector has closed its
    end, and answer each once its transaction is committed.

    Another writer (a collector's own thread, another events writer) may hold the
    database when a commit is due: the batches that arrive while this one waits for it
    go in the same commit, taken once it holds it."""
    while links.open:
        # The rollups' entries are folded in a transaction of their own once due, between
        # commits, or when no batch came meanwhile.
        messages, _ = links.read(storage.fold_wait())
        if messages:
            with storage.writers_held():
                links.take_waiting(messages)
                jobs = [(storage.put_events_job(*message[1:]), False) for _, message in messages]
                outcomes = storage.commit_jobs(conn, jobs)
            replies: dict[_Link, list[bytes]] = {}
            for (link, message), (value, ok) in zip(messages, outcomes, strict=True):
                if not ok and not isinstance(value, StorageFull):
                    value = StorageError(f"{type(value).__name__}: {value}")
                replies.setdefault(link, []).append(frame((message[0], ok, value)))
            for link, frames in replies.items():
                links.answer(link, b"".join(frames))
        links.close_ended()
        if storage.fold_wait() == 0.0:
            storage.fold_entries(conn)
    if storage.fold_wait() is not None:  # what is left, rather than leave it to the next
        storage.fold_entries(conn, everything=True)


def main(argv: list[str]) -> int:
    """argv: the writer's ends of its collectors' connections (file descriptors, comma
    separated), the database, its synchronous setting, the process to end with (0: none;
    the writer stops anyway once every collector has closed its end), and whether it
    keeps the rollups."""
    from homing_collector.storage.sqlite import SQLiteStorage

    fds, path, synchronous, parent = argv[0], argv[1], argv[2], int(argv[3])
    rollups = argv[4] == "rollups"
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if parent:
        end_with_parent(parent, signal.SIGKILL)
    logging.basicConfig(format="%(levelname)s homing_collector events writer: %(message)s")
    socks = [socket.socket(fileno=int(fd)) for fd in fds.split(",")]
    storage = SQLiteStorage(path, synchronous=synchronous, rollups=rollups)
    conn = storage.open_writer(migrate_schema=False)  # the collector has migrated it
    for sock in socks:
        with contextlib.suppress(OSError):  # a worker that died already
            sock.sendall(frame((_READY, True, None)))
    serve(Links(socks), storage, conn)
    storage.close_writer(conn)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
