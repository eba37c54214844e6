"""CPU of the event-stream process a record, as it catches up a stored database: the
whole process (reading the rows, making and gzipping the records, queueing, sending and
settling the batches), with nothing else writing to the file, so the figure is the
stream's own and not the share of a busy machine that bench/collector_ingest.py shows.

DB is a database that bench/collector_ingest.py --event-stream --keep left (its
`bench-streamed-False-0.db`), read from a copy: its stream's cursor goes back to 0, its
outbox is emptied, and its destination becomes a receiver served here on loopback that
answers 200 to every batch. The process is started as the collector starts it; the
figure counts its CPU from its first batch to its last settled one (not its start-up),
by thread. With --rounds, the runs follow each other.

    python bench/stream_catchup.py DB [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HOST = "127.0.0.1"


class Receiver:
    """Answers 200 to every request, on its own thread's event loop; counts them."""

    def __init__(self) -> None:
        self.batches = 0
        self._loop = asyncio.new_event_loop()
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, HOST, 0))
        self.port = server.sockets[0].getsockname()[1]
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.batches += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def _cpu(path: str) -> float:
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(source: Path, workdir: Path, receiver: Receiver) -> tuple[int, float, list[float]]:
    """(records after the first batch, the process's CPU seconds for them, by thread)."""
    db = workdir / "stream.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(source, db)
    conn = sqlite3.connect(db, isolation_level=None)
    (app_id,) = conn.execute("SELECT app_id FROM event_streams").fetchone()
    conn.execute(
        "UPDATE event_streams SET cursor = 0, destination = ?", (f"http://{HOST}:{receiver.port}/",)
    )
    conn.execute("DELETE FROM outbox")
    conn.execute("DELETE FROM hook_destinations")
    (end,) = conn.execute("SELECT max(rowid) FROM events").fetchone()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    process = subprocess.Popen(
        [sys.executable, "-m", "homing_collector.hooks.stream_process", str(db), "NORMAL",
         str(os.getpid()), "15"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    stat = f"/proc/{process.pid}/stat"
    try:
        first: tuple[float, int, list[float]] | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            time.sleep(0.01 if first is None else 0.1)
            (cursor,) = conn.execute("SELECT cursor FROM event_streams").fetchone()
            if first is None and cursor > 0:
                first = (_cpu(stat), cursor, _threads(process.pid))
            (pending,) = conn.execute(
                "SELECT count(*) FROM outbox WHERE state = 'pending'"
            ).fetchone()
            if cursor >= end and pending == 0:
                break
        else:
            raise SystemExit("the stream did not catch up in 10 minutes")
        used, threads = _cpu(stat), _threads(process.pid)
    finally:
        process.terminate()
        process.wait()
    assert first is not None
    (records,) = conn.execute(
        "SELECT count(*) FROM events WHERE app_id = ? AND rowid > ?", (app_id, first[1])
    ).fetchone()
    conn.close()
    by_thread = [after - before for after, before in zip(threads, first[2], strict=False)]
    return records, used - first[0], by_thread


def _threads(pid: int) -> list[float]:
    tasks = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    return [_cpu(f"/proc/{pid}/task/{task}/stat") for task in tasks]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", type=Path, help="a database collector_ingest.py --keep left")
    parser.add_argument("--rounds", type=int, default=3, help="runs, one after the other")
    args = parser.parse_args()
    receiver = Receiver()
    with tempfile.TemporaryDirectory(prefix="homing-catchup-") as workdir:
        for _ in range(args.rounds):
            records, cpu, threads = run_once(args.db, Path(workdir), receiver)
            print(
                f"{records:,} records: {1e6 * cpu / records:.2f} us of CPU a record; by thread"
                f" (main first, then in order of start): "
                + ", ".join(f"{1e6 * t / records:.2f}" for t in threads)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
