"""The event-stream pump, and the webhook deliveries, in a process of their own.

Making records is Python work, about 4 microseconds an event (bench/stream_records.py),
and the stream's process takes about 9 an event in all (bench/collector_cpu.py: reading
the rows about 1.1 of them, making and gzipping the records 3.5 to 4.5, the rest its
deliveries, its commits and their checkpoints; on a loaded machine, alternated with
issue 15's branch point, 9 runs each: 10.7, from 9.8 to 14.3, where it took 12.3, from
11.2 to 15.2). Catching up a stored database alone (bench/stream_catchup.py), it takes
5.6 us of CPU a record, from 5.4 to 6.0, where it took 6.5, from 6.2 to 7.1, before its
batches were leased as they are queued and an event's {} attributes or metrics kept as
they are (hooks/streams.py, records.py; alternated, five runs each). In
the collector's process it would take the GIL from the event loop that answers
PutEvents, which then waits for it at every socket call; here it takes a core of its
own, if there is one. The child opens the same database, takes turns with
the other writers through the same file lock, and queues batches in the outbox.

While the child runs, it also makes the outbox's deliveries (the stream's batches, the
custom channels' calls), with a delivery worker of its own: their calls, claims and
settlements took about a tenth of the GIL samples of the collector's event loop with an
event stream and a webhook campaign (py-spy --gil on bench/collector_ingest.py
--campaign), and moving them cut the collector's CPU per stored event in that case by
a sixth to a third (bench/collector_cpu.py). The
collector's worker keeps the deliveries to in-process hooks (`hook:NAME`), which only
its process can call, and the gauges. The child's attempts reach the collector's
/metrics as JSON lines on its stdout.

It stops when the collector closes it (SIGTERM from the collector; SIGINT, which a
terminal sends to the whole group, is ignored), and dies with it (Linux:
PR_SET_PDEATHSIG). A pass cut short by a kill writes nothing: the cursor moves in the
transaction that queues the batch; a delivery in flight is made again once its lease
is released (the collector releases those of processes that are gone) or runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from homing_collector.lifetime import end_with_parent
from homing_collector.metrics import Metrics
from homing_collector.storage.base import Delivery, Storage

if TYPE_CHECKING:
    from homing_collector.storage.sqlite import SQLiteStorage

logger = logging.getLogger("homing_collector")

_STOP_TIMEOUT = 10.0
WATCH_INTERVAL = 1.0  # seconds between looks for event streams
NICENESS = 10
REPORT_INTERVAL = 0.25  # seconds between two reports of the child's delivery attempts
CHECKPOINT_INTERVAL = 5.0  # seconds, at least, between two checkpoints of the child's


class Part:
    """The part of SQLite's outbox that one process's delivery worker takes: the
    deliveries to in-process hooks if `hooks()` is True, all the others if False, all of
    them if None."""

    def __init__(self, storage: SQLiteStorage, hooks: Callable[[], bool | None]) -> None:
        self.storage = storage
        self.hooks = hooks

    async def deliveries_due(self, now: float) -> bool:
        return await self.storage.deliveries_due(now, hooks=self.hooks())

    async def claim_deliveries(
        self,
        owner: str,
        now: float,
        lease_until: float,
        *,
        limit: int,
        per_destination: int,
        busy: Sequence[str],
        held: Sequence[int] = (),
    ) -> list[Delivery]:
        return await self.storage.claim_deliveries(
            owner, now, lease_until, limit=limit, per_destination=per_destination, busy=busy,
            held=held, hooks=self.hooks(),
        )  # fmt: skip


class StreamProcess:
    """The collector's end: the child runs while some application has an event stream
    (looked for every WATCH_INTERVAL), and is started again if it dies."""

    def __init__(
        self,
        storage: Storage,
        path: Path,
        synchronous: str,
        *,
        metrics: Metrics | None = None,
        hook_timeout: float = 15.0,
    ) -> None:
        self.storage = storage
        self.path = path
        self.synchronous = synchronous
        self.metrics = metrics or Metrics()  # where the child's delivery attempts are counted
        self.hook_timeout = hook_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the child runs, and makes the deliveries other than to `hook:NAME`."""
        return self._process is not None and self._process.poll() is None

    async def start(self) -> None:
        self._watch = asyncio.get_running_loop().create_task(self._watching())

    async def _watching(self) -> None:
        while True:
            try:
                wanted = bool(await self.storage.list_event_streams())
                running = self._process is not None and self._process.poll() is None
                if wanted and not running:
                    if self._process is not None:
                        logger.error("The event-stream process stopped; starting it again")
                    self._spawn()
                elif running and not wanted:
                    await self._stop()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("event stream: could not start or stop its process")
            await asyncio.sleep(WATCH_INTERVAL)

    def _spawn(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "homing_collector.hooks.stream_process", str(self.path),
             self.synchronous, str(os.getpid()), repr(self.hook_timeout)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self._process.stdout is not None
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self._read_reports, args=(self._process.stdout, loop), daemon=True
        ).start()

    def _read_reports(self, stdout: IO[bytes], loop: asyncio.AbstractEventLoop) -> None:
        """The child's reports of its attempts, counted in the event loop's thread."""
        with stdout:
            for line in stdout:
                try:
                    attempts = [(str(d), str(o), int(n)) for d, o, n in orjson.loads(line)]
                except (ValueError, TypeError):
                    logger.warning("event stream: its process reported %r", line[:200])
                    continue
                with contextlib.suppress(RuntimeError):  # the loop is closed: stopping
                    loop.call_soon_threadsafe(self._count, attempts)

    def _count(self, attempts: list[tuple[str, str, int]]) -> None:
        for destination, outcome, count in attempts:
            self.metrics.hook_attempts[(destination, outcome)] += count

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self._stop()

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.get_running_loop().run_in_executor(None, process.wait, _STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.error("The event-stream process did not stop; killing it")
            process.kill()
            process.wait()


async def _run(path: Path, synchronous: str, hook_timeout: float) -> None:
    from homing_collector.hooks.outbox import Outbox
    from homing_collector.hooks.streams import StreamPump, Taker
    from homing_collector.storage.sqlite import SQLiteStorage

    # Its own commits are few and small; the collector's checkpoints, after every commit
    # of its writers, copy them too. Its own, after a commit, are for when the collector
    # commits nothing for a while (bench/collector_cpu.py's stream case: at the
    # collector's pace, 0.8 us of this process's CPU a record went to its checkpoints).
    storage = SQLiteStorage(path, synchronous=synchronous, checkpoint_interval=CHECKPOINT_INTERVAL)
    await storage.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    metrics = Metrics()
    outbox = Outbox(
        storage,
        metrics,
        timeout=hook_timeout,
        lease=4 * max(hook_timeout, 15),
        source=Part(storage, lambda: False),
        chores=False,
    )
    await outbox.start()
    pump = StreamPump(storage, wake=outbox.wake, clock=time.time, taker=Taker(storage, outbox))
    await pump.start()
    report = loop.create_task(_report(metrics))
    try:
        await stop.wait()
    finally:
        await pump.close()
        await outbox.close()
        report.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await report
        _send_report(metrics, Counter())
        await storage.close()


async def _report(metrics: Metrics) -> None:
    sent: Counter[tuple[str, str]] = Counter()
    while True:
        await asyncio.sleep(REPORT_INTERVAL)
        sent = _send_report(metrics, sent)


def _send_report(metrics: Metrics, sent: Counter[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """Write the attempts made since `sent` as a JSON line; return what is sent now."""
    now = Counter(metrics.hook_attempts)
    new = [[d, o, n - sent[(d, o)]] for (d, o), n in now.items() if n > sent[(d, o)]]
    if new:
        with contextlib.suppress(OSError):  # the collector is gone
            sys.stdout.buffer.write(orjson.dumps(new) + b"\n")
            sys.stdout.buffer.flush()
    return now


def main(argv: list[str]) -> int:
    path, synchronous, parent, hook_timeout = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent(int(parent), signal.SIGKILL)
    # Background work: when the cores are busy, PutEvents goes first and the stream
    # catches up afterwards (its lag is in /metrics).
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs each webhook call at INFO; the outbox logs what goes wrong itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        _event_loop_run()(_run(Path(path), synchronous, float(hook_timeout)))
    return 0


def _event_loop_run() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop's run, as uvicorn runs the collector, if it is installed (the collector's
    extra brings it): its loop, in C, takes less of this process's CPU than asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
