"""Push fan-out: one collector holds N idle push streams, then a push goes to every one.

Starts ``homing-collector serve`` on loopback with a fresh SQLite file and N endpoints,
and opens N push streams from several client processes (asyncio, raw sockets, many
streams each). Once all are held, it sends one push to every endpoint with SendMessages,
100 endpoints a request, one request after the other. Each push carries the time it was
sent in its ``Data``; each client notes when it arrives (one machine, one clock).

It prints the per-message delivery latency (p50, p99), the streams held, and the
collector's memory per stream (RSS with the streams open minus RSS before, over N). The
peer, measured in the same run with the streams held: the round trip of one small
request, ``GET /healthz`` on a kept-alive connection, and the time SendMessages takes to
answer. Last, it stops the collector with SIGTERM and times how long it takes with every
stream open.

    python bench/push_fanout.py [--streams 10000] [--client-processes 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

HOST = "127.0.0.1"
BATCH = 100  # endpoints per SendMessages request, Pinpoint's limit
START_TIMEOUT = 30.0
CONNECT_TIMEOUT = 300.0  # for all streams to be held
DELIVERY_TIMEOUT = 120.0  # for every push to arrive
STOP_TIMEOUT = 60.0


def _raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# -- a client process: many streams, one event loop ---------------------------------------


async def _hold(
    port: int, path: str, token: str, opened: asyncio.Future[None], out: list[float]
) -> None:
    """Open one stream, say so through `opened`, then wait for one push and time it."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        buffer = b""
        while b"retry: 5000" not in buffer:
            piece = await reader.read(4096)
            if not piece:
                raise RuntimeError(f"stream closed before it opened: {buffer[:200]!r}")
            buffer += piece
        if not buffer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"stream refused: {buffer[:200]!r}")
    except Exception as exc:
        opened.set_exception(exc)
        return
    opened.set_result(None)
    buffer = b""
    while True:
        piece = await reader.read(65536)
        if not piece:
            raise RuntimeError("the stream ended before its push arrived")
        now = time.time()
        buffer += piece
        # Each event is one chunk of the chunked body, so a data line holds no chunk
        # framing; a line cut by a read waits for the rest.
        start = buffer.find(b"data: ")
        end = buffer.find(b"\n", start)
        if start >= 0 and end >= 0:
            message = orjson.loads(buffer[start + 6 : end])
            out.append(now - float(message["Data"]["sent_at"]))
            writer.close()
            return


async def _client(args: argparse.Namespace) -> None:
    limit = _raise_file_limit()
    ids = Path(args.ids_file).read_text().split()
    if len(ids) + 64 > limit:
        raise SystemExit(f"client: {len(ids)} streams need more open files than {limit}")
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    gate = asyncio.Semaphore(64)  # connections being set up at once
    openings: list[asyncio.Future[None]] = []

    async def one(endpoint_id: str) -> None:
        path = f"/v1/apps/{args.app}/endpoints/{endpoint_id}/stream"
        opened: asyncio.Future[None] = loop.create_future()
        openings.append(opened)
        async with gate:
            task = asyncio.create_task(_hold(args.port, path, args.token, opened, latencies))
            await asyncio.wait({task, opened}, return_when=asyncio.FIRST_COMPLETED)
        await task

    tasks = [asyncio.create_task(one(endpoint_id)) for endpoint_id in ids]
    await asyncio.sleep(0)
    await asyncio.gather(*openings)
    print(json.dumps({"connected": len(ids)}), flush=True)
    done, pending = await asyncio.wait(tasks, timeout=DELIVERY_TIMEOUT)
    errors = [str(t.exception()) for t in done if t.exception() is not None]
    errors += [f"{len(pending)} streams got no push"] if pending else []
    for task in pending:
        task.cancel()
    print(json.dumps({"latencies": latencies, "errors": errors[:5]}), flush=True)


# -- the server ---------------------------------------------------------------------------


def _cli(python: str, db: Path, *args: str) -> Any:
    done = subprocess.run(
        [python, "-m", "homing_collector", "--db", str(db), *args],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return json.loads(done.stdout)


async def _start_server(python: str, db: Path, log: Path) -> tuple[asyncio.subprocess.Process, int]:
    with log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            python, "-m", "homing_collector", "--db", str(db), "serve", "--port", "0",
            "--no-access-log",
            stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_raise_file_limit,
        )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
    if b"listening on http://" not in line:
        raise RuntimeError(f"the collector did not start: {line!r}\n{log.read_text()}")
    port = int(line.split(b"listening on http://")[1].split()[0].rsplit(b":", 1)[1])
    return process, port


class Connection:
    """One kept-alive HTTP/1.1 connection; requests one after the other."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection(HOST, port))

    async def request(
        self, method: str, path: str, token: str = "", body: bytes = b""
    ) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def _stream_gauge(port: int) -> int:
    connection = await Connection.open(port)
    _, body = await connection.request("GET", "/metrics")
    connection.close()
    for line in body.decode().splitlines():
        if line.startswith("homing_push_streams "):
            return int(float(line.split()[1]))
    return -1


# -- main ---------------------------------------------------------------------------------


async def _bench(args: argparse.Namespace, workdir: Path) -> int:
    db, log = workdir / "bench.db", workdir / "server.log"
    app = _cli(args.server_python, db, "apps", "create", "bench", "--json")
    app_id, ingest, admin = app["application_id"], app["ingest"]["token"], app["admin"]["token"]
    ids = [f"device-{i:06d}" for i in range(args.streams)]

    process, port = await _start_server(args.server_python, db, log)
    clients: list[asyncio.subprocess.Process] = []
    try:
        connection = await Connection.open(port)
        for start in range(0, len(ids), BATCH):
            items = [{"Id": i, "ChannelType": "CUSTOM"} for i in ids[start : start + BATCH]]
            status, body = await connection.request(
                "PUT", f"/v1/apps/{app_id}/endpoints", admin, orjson.dumps({"Item": items})
            )
            assert status == 202, body
        rss_before = _rss_kib(process.pid)

        # Streams, spread over the client processes.
        started = time.perf_counter()
        share = -(-len(ids) // args.client_processes)
        for n in range(args.client_processes):
            mine = ids[n * share : (n + 1) * share]
            if not mine:
                continue
            ids_file = workdir / f"client-{n}.txt"
            ids_file.write_text("\n".join(mine))
            clients.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--client-mode",
                    "--port",
                    str(port),
                    "--app",
                    app_id,
                    "--token",
                    ingest,
                    "--ids-file",
                    str(ids_file),
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for client in clients:
            assert client.stdout is not None
            line = await asyncio.wait_for(client.stdout.readline(), CONNECT_TIMEOUT)
            if b"connected" not in line:
                raise RuntimeError(f"a client process failed to connect: {line!r}")
        connect_s = time.perf_counter() - started
        await asyncio.sleep(1.0)  # let the last streams settle
        held = await _stream_gauge(port)
        rss_after = _rss_kib(process.pid)

        # The peer: a small request's round trip, with every stream held. (A fresh
        # connection: the server closes one idle for 5 s.)
        connection.close()
        connection = await Connection.open(port)
        rtt = []
        for _ in range(200):
            t0 = time.perf_counter()
            status, _ = await connection.request("GET", "/healthz")
            rtt.append(time.perf_counter() - t0)
            assert status == 200

        # The fan-out.
        answers = []
        statuses: dict[str, int] = {}
        fanout_started = time.perf_counter()
        for start in range(0, len(ids), BATCH):
            body = orjson.dumps({
                "Endpoints": {i: {} for i in ids[start : start + BATCH]},
                "MessageConfiguration": {"DefaultPushNotificationMessage": {
                    "Title": "Bench", "Body": "fan-out", "Data": {"sent_at": repr(time.time())},
                }},
            })  # fmt: skip
            t0 = time.perf_counter()
            status, answer = await connection.request(
                "POST", f"/v1/apps/{app_id}/messages", admin, body
            )
            answers.append(time.perf_counter() - t0)
            assert status == 200, answer
            for result in orjson.loads(answer)["EndpointResult"].values():
                statuses[result["DeliveryStatus"]] = statuses.get(result["DeliveryStatus"], 0) + 1
        send_s = time.perf_counter() - fanout_started

        latencies: list[float] = []
        errors: list[str] = []
        for client in clients:
            assert client.stdout is not None
            line = await asyncio.wait_for(client.stdout.readline(), DELIVERY_TIMEOUT)
            report = json.loads(line)
            latencies += report["latencies"]
            errors += report["errors"]
        connection.close()

        stop_started = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        stop_s = time.perf_counter() - stop_started
    finally:
        for client in clients:
            if client.returncode is None:
                client.kill()
                await client.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()

    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM push_messages").fetchone()
    conn.close()

    ms = [value * 1000 for value in latencies]
    per_stream_kib = (rss_after - rss_before) / max(1, held)
    print(f"streams held: {held:,} of {args.streams:,} (opened in {connect_s:.1f} s by "
          f"{len(clients)} client processes)")  # fmt: skip
    print(f"collector RSS: {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB with "
          f"the streams: {per_stream_kib:.1f} KiB per stream")  # fmt: skip
    print(f"SendMessages: {len(answers)} requests of {BATCH} endpoints in {send_s:.2f} s; "
          f"statuses {statuses}")  # fmt: skip
    if ms:
        print(
            f"delivery latency (send -> received), {len(ms):,} pushes: "
            f"p50 {_percentile(ms, 0.5):.1f} ms, p99 {_percentile(ms, 0.99):.1f} ms, "
            f"max {max(ms):.1f} ms"
        )
    print(
        f"peer, same run, streams held: GET /healthz round trip p50 "
        f"{statistics.median(rtt) * 1000:.2f} ms, p99 {_percentile(rtt, 0.99) * 1000:.2f} ms; "
        f"SendMessages answer p50 {statistics.median(answers) * 1000:.1f} ms, "
        f"p99 {_percentile(answers, 0.99) * 1000:.1f} ms"
    )
    print(f"SIGTERM with {held:,} streams open: exit {code} after {stop_s:.2f} s")
    print(f"check: {stored:,} rows in push_messages for {args.streams:,} pushes sent")
    for error in errors:
        print(f"  ! client: {error}")
    ok = (
        held == args.streams
        and len(ms) == args.streams
        and stored == args.streams
        and code == 0
        and not errors
    )
    print(f"target: {args.streams:,} streams held, p50 <= 50 ms: "
          + ("met" if ok and ms and _percentile(ms, 0.5) <= 50 else "NOT met"))  # fmt: skip
    if args.keep:
        print(f"kept {db} and {log}")
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10_000, help="push streams to hold (N)")
    parser.add_argument(
        "--client-processes", type=int, default=4, help="processes holding the streams"
    )
    parser.add_argument(
        "--server-python", default=sys.executable, help="the interpreter that runs the server"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and the log")
    # A client process, started by the benchmark itself.
    parser.add_argument("--client-mode", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--app", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", help=argparse.SUPPRESS)
    return parser


def main() -> int:
    args = _parser().parse_args()
    if args.client_mode:
        asyncio.run(_client(args))
        return 0
    if args.streams < 1 or args.client_processes < 1:
        raise SystemExit("--streams and --client-processes must be positive")
    workdir = Path(tempfile.mkdtemp(prefix="homing-bench-"))
    try:
        return asyncio.run(_bench(args, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir)


if __name__ == "__main__":
    sys.exit(main())
