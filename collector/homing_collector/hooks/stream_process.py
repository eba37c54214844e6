"""The event-stream pump in a process of its own.

Making records is Python work, about 30 microseconds an event (bench/collector_ingest.py
--event-stream). In the collector's process it would take the GIL from the event loop
that answers PutEvents, which then waits for it at every socket call; here it takes a
core of its own, if there is one. The child opens the same database, takes turns with
the other writers through the same file lock, and queues batches in the outbox, which
the collector's delivery worker finds at its next look. It stops when the collector
closes it (SIGTERM from the collector; SIGINT, which a terminal sends to the whole
group, is ignored), and dies with it (Linux: PR_SET_PDEATHSIG). A pass cut short by a
kill writes nothing: the cursor moves in the transaction that queues the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from homing_collector.lifetime import end_with_parent
from homing_collector.storage.base import Storage

logger = logging.getLogger("homing_collector")

_STOP_TIMEOUT = 10.0
WATCH_INTERVAL = 1.0  # seconds between looks for event streams
NICENESS = 10


class StreamProcess:
    """The collector's end: the child runs while some application has an event stream
    (looked for every WATCH_INTERVAL), and is started again if it dies."""

    def __init__(self, storage: Storage, path: Path, synchronous: str) -> None:
        self.storage = storage
        self.path = path
        self.synchronous = synchronous
        self._process: subprocess.Popen[bytes] | None = None
        self._watch: asyncio.Task[None] | None = None

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
             self.synchronous, str(os.getpid())],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

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


async def _run(path: Path, synchronous: str) -> None:
    from homing_collector.hooks.streams import StreamPump
    from homing_collector.storage.sqlite import SQLiteStorage

    storage = SQLiteStorage(path, synchronous=synchronous)
    await storage.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    pump = StreamPump(storage, wake=lambda: None, clock=time.time)
    await pump.start()
    try:
        await stop.wait()
    finally:
        await pump.close()
        await storage.close()


def main(argv: list[str]) -> int:
    path, synchronous, parent = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent(int(parent), signal.SIGKILL)
    # Background work: when the cores are busy, PutEvents goes first and the stream
    # catches up afterwards (its lag is in /metrics).
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(Path(path), synchronous))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
