"""PutEvents throughput of a live collector, beside its own parse-only ceiling.

Starts ``homing-collector serve --bench-routes`` on loopback, with a fresh SQLite file for
each case, and drives it with concurrent keep-alive clients, each sending PutEvents
batches of 100 events. Four cases, gzip off and on:

- stored: ``POST /v1/apps/{app}/events``, validated, written and committed;
- ceiling: ``POST /v1/apps/{app}/events-parse-only``, the same body read and parsed,
  nothing stored.

Every event id is a fresh UUID and every batch is sent once to the store, so
deduplication cannot flatter the figures; at the end the rows in the ``events`` table
must equal the events answered 202. The load generator is one asyncio process writing
pre-built request bytes, cheap enough to leave the server its CPU; its CPU use is
printed beside the server's, and so is what the rest of the machine used meanwhile: on
a small shared machine the figures mean little without it.

With ``--grown DB``, a third case stores into a fresh copy of DB (say, one that
bench/analytics_queries.py loaded with millions of events) and of its columnar copy
(``DB-columnar``, if there is one), into its application ``--grown-app``, beside the empty
database: how the cost of storing grows with what is stored.

With ``--event-stream``, another case stores the same way with an event stream active
(PutEventStream to a receiver that the bench serves on loopback, answering 200 to each
signed gzip NDJSON batch): what streaming every stored event costs PutEvents, in the
same run (target: at least 85% of the throughput without). The receiver counts the
records it got, so the stream's lag at the end of the case is printed too.

With ``--in-process-hook``, another case stores with an in-process event-stream hook
installed as a plugin (an entry point of ``homing_collector.hooks`` that only counts the
records it gets): what making every stored event a record in the serving process, and
handing it to Python code there, costs PutEvents.

With ``--campaign`` as well, that case also has an event-triggered webhook campaign
active: every event is matched after its commit, and a ``purchase`` (one event in 12) of
an Android endpoint (one in 3) is sent through a custom channel to the same receiver,
through the outbox, which also stores a ``_campaign.send`` event for the stream. Its
ratio is issue 15's target: PutEvents with an event stream and a webhook campaign,
against neither. With ``--rounds`` the cases alternate.

    python bench/collector_ingest.py [--duration 8] [--clients 16] [--warmup 2]
        [--event-ids random|time-ordered] [--rounds 1] [--no-gzip]
        [--grown DB [--grown-app benchapp]] [--event-stream [--campaign]] [--in-process-hook]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip as gzip_module
import itertools
import json
import os
import random
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import cycle
from pathlib import Path
from typing import Any

import orjson

from homing._events import _event_id

HOST = "127.0.0.1"
EVENTS_PER_BATCH = 100
_CHUNK = 1000  # batches built per task
START_TIMEOUT = 30.0  # seconds for the server to come up
REPLY_TIMEOUT = 30.0  # seconds for one answer
STOP_TIMEOUT = 60.0  # seconds for the server to commit and exit on SIGTERM
SESSION_MARK = "S" * 36  # stands for a session id in the pre-encoded event shapes
START_MARK = "T" * 24  # stands for the session's start timestamp


# -- the data: realistic, distinct batches ------------------------------------------------

_EVENT_TYPES = [
    ("_session.start", 0), ("_session.stop", 0), ("screen.view", 3), ("item.view", 4),
    ("item.add_to_cart", 5), ("purchase", 6), ("search", 2), ("level.complete", 4),
    ("share", 2), ("notification.opened", 3), ("settings.changed", 2), ("error", 3),
]  # fmt: skip
_WORDS = [
    "home", "search", "cart", "checkout", "profile", "settings", "books", "music", "games",
    "garden", "kitchen", "sports", "red", "blue", "green", "small", "large", "daily",
    "weekly", "push", "email", "organic", "referral", "dark", "light", "en_US", "de_DE",
]  # fmt: skip
_DEVICES = [
    ("android", "14", "Google", "Pixel 8"), ("android", "13", "Samsung", "SM-S911B"),
    ("ios", "17.4", "Apple", "iPhone15,2"), ("linux", "6.8", "Raspberry Pi", "4B"),
    ("windows", "11", "Dell", "XPS 13"), ("macos", "14.4", "Apple", "MacBookAir10,1"),
]  # fmt: skip


def _uuids(rng: random.Random, count: int) -> Iterator[str]:
    for _ in range(count):
        h = f"{rng.getrandbits(128):032x}"
        yield f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _uuid7s(count: int, start_ms: int) -> Iterator[str]:
    """The Homing SDK's own event ids (version 7 UUIDs), one millisecond apart."""
    for n in range(count):
        yield _event_id((start_ms + n + 0.5) / 1000)  # + 0.5: no float falls a ms short


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _event_shapes(rng: random.Random, now: datetime, count: int) -> list[list[bytes]]:
    """Pre-encoded events, split where each batch puts its own session id and start."""
    shapes = []
    for _ in range(count):
        event_type, n_attributes = rng.choice(_EVENT_TYPES)
        event: dict[str, Any] = {
            "EventType": event_type,
            "Timestamp": _iso(now - timedelta(seconds=rng.uniform(0, 3600))),
            "Attributes": {
                f"{rng.choice(_WORDS)}_{i}": " ".join(rng.choices(_WORDS, k=rng.randint(1, 4)))
                for i in range(n_attributes)
            },
            "Metrics": {f"m{i}": round(rng.uniform(0, 500), 2) for i in range(rng.randint(0, 3))},
            "Session": {"Id": SESSION_MARK, "StartTimestamp": START_MARK},
            "AppPackageName": "com.example.shop",
            "AppTitle": "Example Shop",
            "AppVersionCode": str(rng.choice([141, 142, 143])),
            "SdkName": "homing-python",
            "ClientSdkVersion": "0.1.0",
        }
        head, rest = orjson.dumps(event).split(SESSION_MARK.encode())
        middle, tail = rest.split(START_MARK.encode())
        shapes.append([head, middle, tail])
    return shapes


def _endpoints(rng: random.Random, now: datetime, count: int) -> list[tuple[bytes, bytes, bytes]]:
    """(endpoint id, endpoint JSON, session start) per device; each device keeps its own."""
    ids = list(_uuids(rng, count))
    result = []
    for endpoint_id in ids:
        platform, version, make, model = rng.choice(_DEVICES)
        endpoint: dict[str, Any] = {
            "ChannelType": "GCM" if platform == "android" else "CUSTOM",
            "Demographic": {
                "AppVersion": "1.4.2", "Locale": rng.choice(["en_US", "de_DE", "fr_FR"]),
                "Make": make, "Model": model, "Platform": platform, "PlatformVersion": version,
                "Timezone": rng.choice(["Europe/Berlin", "America/New_York", "Asia/Tokyo"]),
            },
            "Location": {"Country": rng.choice(["DE", "US", "JP"])},
            "Attributes": {"plan": [rng.choice(["free", "pro"])]},
        }  # fmt: skip
        if rng.random() < 0.5:
            endpoint["User"] = {"UserId": f"user-{endpoint_id[:13]}"}
        start = _iso(now - timedelta(seconds=rng.uniform(3600, 7200)))
        result.append((endpoint_id.encode(), orjson.dumps(endpoint), start.encode()))
    return result


def make_batches(seed: int, count: int, *, gzip: bool, ordered_ids: bool = False) -> list[bytes]:
    """`count` distinct PutEvents bodies of 100 events, every event id a fresh UUID:
    random (version 4), or with `ordered_ids` growing from one batch to the next."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    shapes = _event_shapes(rng, now, 512)
    endpoints = _endpoints(random.Random(1), now, 2000)  # the same devices in every pool
    if ordered_ids:  # the chunks of a pool go in the order of their seeds
        start_ms = int(now.timestamp() * 1000) + (seed % 1000) * _CHUNK * EVENTS_PER_BATCH
        event_ids = _uuid7s(count * EVENTS_PER_BATCH, start_ms)
    else:
        event_ids = _uuids(rng, count * EVENTS_PER_BATCH)
    session_ids = _uuids(rng, count)
    bodies = []
    for n in range(count):
        endpoint_id, endpoint, start = endpoints[n % len(endpoints)]
        session = next(session_ids).encode()
        events = b",".join(
            b'"%s":%s%s%s%s%s' % (next(event_ids).encode(), head, session, middle, start, tail)
            for head, middle, tail in rng.choices(shapes, k=EVENTS_PER_BATCH)
        )
        body = b'{"BatchItem":{"%s":{"Endpoint":%s,"Events":{%s}}}}' % (
            endpoint_id,
            endpoint,
            events,
        )
        if gzip:
            packer = zlib.compressobj(6, zlib.DEFLATED, 31)
            body = packer.compress(body) + packer.flush()
        bodies.append(body)
    return bodies


def build_pools(count: int, *, ordered_ids: bool = False) -> dict[bool, list[bytes]]:
    """`count` batches gzip off and `count` others gzip on, built on every core."""
    chunks = [(gzip, seed, min(_CHUNK, count - start))
              for gzip in (False, True)
              for seed, start in enumerate(range(0, count, _CHUNK), start=1000 * gzip)]  # fmt: skip
    pools: dict[bool, list[bytes]] = {False: [], True: []}
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        futures = [
            pool.submit(make_batches, seed, n, gzip=gzip, ordered_ids=ordered_ids)
            for gzip, seed, n in chunks
        ]
        for (gzip, _, _), future in zip(chunks, futures, strict=True):
            pools[gzip] += future.result(timeout=600)
    return pools


# -- the load generator -------------------------------------------------------------------


@dataclass
class Counters:
    requests: int = 0
    accepted: int = 0  # events answered 202 one by one (stored case), or all (ceiling)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class Figures:
    events_per_s: float
    requests_per_s: float
    seconds: float
    server_cpu: float  # share of one core, over the measured window
    client_cpu: float
    other_cpu: float  # everything else on the machine: other processes, the kernel's own work
    mean_ms: float


def _count_accepted(reply: bytes) -> int:
    results = orjson.loads(reply).get("Results", {})
    return sum(
        1
        for item in results.values()
        for status in item.get("EventsItemResponse", {}).values()
        if status.get("StatusCode") == 202
    )


async def _client(
    port: int,
    head: bytes,
    gzip: bool,
    bodies: Iterator[bytes],
    stop: asyncio.Event,
    counters: Counters,
    latency: list[float],
    stored: bool,
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port, limit=4 * 1024 * 1024)
    encoding = b"Content-Encoding: gzip\r\n" if gzip else b""
    try:
        while not stop.is_set():
            body = next(bodies, None)
            if body is None:
                return
            started = time.perf_counter()
            writer.writelines(
                [head, encoding, b"Content-Length: %d\r\n\r\n" % len(body), body],
            )
            head_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REPLY_TIMEOUT)
            status = int(head_bytes[9:12])
            length = 0
            for line in head_bytes.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            reply = await asyncio.wait_for(reader.readexactly(length), REPLY_TIMEOUT)
            latency[0] += time.perf_counter() - started
            counters.requests += 1
            counters.statuses[status] = counters.statuses.get(status, 0) + 1
            if status == 202:
                counters.accepted += _count_accepted(reply) if stored else EVENTS_PER_BATCH
            elif len(counters.errors) < 5:
                counters.errors.append(f"{status}: {reply[:200]!r}")
    except Exception as exc:
        counters.errors.append(f"client failed: {exc!r}")
    finally:
        writer.close()


def _machine_busy_seconds() -> float:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    ticks = [int(field) for field in fields]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its living children (the collector's events writer)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except OSError:
        return float("nan")
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(_cpu_seconds(child) for child in children)


async def _run_case(
    *,
    port: int,
    server_pid: int,
    path: str,
    token: str,
    gzip: bool,
    bodies: Iterator[bytes],
    clients: int,
    warmup: float,
    duration: float,
    stored: bool,
) -> tuple[Figures, Counters]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nAccept-Encoding: identity\r\n"
    ).encode()
    stop = asyncio.Event()
    counters = Counters()
    latency = [0.0]
    tasks = [
        asyncio.create_task(_client(port, head, gzip, bodies, stop, counters, latency, stored))
        for _ in range(clients)
    ]
    await asyncio.sleep(warmup)
    t0, r0, e0, l0 = time.perf_counter(), counters.requests, counters.accepted, latency[0]
    s0, c0, m0 = _cpu_seconds(server_pid), time.process_time(), _machine_busy_seconds()
    while time.perf_counter() - t0 < duration and not all(t.done() for t in tasks):
        await asyncio.sleep(0.05)
    t1, r1, e1, l1 = time.perf_counter(), counters.requests, counters.accepted, latency[0]
    s1, c1, m1 = _cpu_seconds(server_pid), time.process_time(), _machine_busy_seconds()
    ran_out = all(t.done() for t in tasks) and t1 - t0 < duration
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), REPLY_TIMEOUT + 5)
    if ran_out and not counters.errors:
        counters.errors.append(
            f"the batches ran out after {t1 - t0:.1f} s; raise --max-rate for a longer run"
        )
    elapsed = t1 - t0
    return (
        Figures(
            events_per_s=(e1 - e0) / elapsed,
            requests_per_s=(r1 - r0) / elapsed,
            seconds=elapsed,
            server_cpu=(s1 - s0) / elapsed,
            client_cpu=(c1 - c0) / elapsed,
            other_cpu=max(0.0, (m1 - m0) - (s1 - s0) - (c1 - c0)) / elapsed,
            mean_ms=1000 * (l1 - l0) / max(r1 - r0, 1),
        ),
        counters,
    )


# -- the server ---------------------------------------------------------------------------


def _start_server(
    python: str, db: Path, log: Path, extra: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [python, "-m", "homing_collector", "--db", str(db), "serve", "--port", "0",
             "--bench-routes", *extra],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )  # fmt: skip
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    line = b""
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            piece = os.read(process.stdout.fileno(), 4096)
            if not piece:
                break
            line += piece
    if b"listening on http://" not in line:
        _stop_server(process)
        raise RuntimeError(f"the collector did not start: {line!r}\n{log.read_text()}")
    port = int(line.split(b"listening on http://")[1].split()[0].rsplit(b":", 1)[1])
    return process, port


async def _wait_healthy(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            if answer.startswith(b"HTTP/1.1 200"):
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the collector did not answer /healthz")


class StreamReceiver:
    """An event stream's receiver on loopback: it reads each POST and answers 200, and
    counts the records of the batches; and a custom channel's, on the path /custom,
    whose calls it counts."""

    def __init__(self) -> None:
        self.records = 0
        self.batches = 0
        self.custom_calls = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                if head.startswith(b"POST /custom"):
                    self.custom_calls += 1
                else:
                    self.records += gzip_module.decompress(body).count(b"\n")
                    self.batches += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
        except asyncio.CancelledError:  # the bench closes the receiver with calls open
            writer.close()


async def _post(port: int, token: str, path: str, request: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(request).encode()
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    if not answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 201")):
        raise RuntimeError(f"POST {path} failed: {answer[:300]!r}")
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


async def _put_event_stream(port: int, app_id: str, token: str, url: str) -> None:
    request = {"DestinationStreamArn": url, "RoleArn": "ignored"}
    await _post(port, token, f"/v1/apps/{app_id}/eventstream", request)


async def _create_event_campaign(port: int, app_id: str, token: str, url: str) -> None:
    """A webhook campaign: the Android endpoint that stored a `purchase` is sent to the
    custom channel at `url`."""
    segment = await _post(port, token, f"/v1/apps/{app_id}/segments", {
        "Name": "android", "Dimensions": {"Demographic": {"Platform": {"Values": ["android"]}}},
    })  # fmt: skip
    await _post(port, token, f"/v1/apps/{app_id}/campaigns", {
        "Name": "thanks",
        "SegmentId": segment["Id"],
        "Schedule": {
            "StartTime": "IMMEDIATE", "Frequency": "EVENT",
            "EventFilter": {"FilterType": "ENDPOINT",
                            "Dimensions": {"EventType": {"Values": ["purchase"]}}},
        },
        "CustomDeliveryConfiguration": {"DeliveryUri": url},
        "MessageConfiguration": {"CustomMessage": {"Data": "Thanks for buying"}},
    })  # fmt: skip
    await asyncio.sleep(1.5)  # the scheduler's tick compiles the filters every second


_PLUGIN = """
import os
from homing_collector import Hooks

count = 0

def take(records):
    global count
    count += len(records)
    with open(os.environ["BENCH_HOOK_COUNT"], "w") as out:
        out.write(str(count))

hooks = Hooks(event_stream=take, name="bench")
"""


def _hook_plugin(workdir: Path) -> dict[str, str]:
    """A plugin with an event-stream hook, installed by a path entry: the server's env."""
    site = workdir / "plugin"
    dist = site / "homing_bench_hook-1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (site / "homing_bench_hook.py").write_text(_PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: homing-bench-hook\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[homing_collector.hooks]\nbench = homing_bench_hook:hooks\n"
    )
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "BENCH_HOOK_COUNT": str(workdir / "hook-count")}


def _stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    if process.stdout is not None:
        process.stdout.close()


# -- main ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per case")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument(
        "--max-rate",
        type=float,
        default=200_000,
        help="events/s the pre-generated batches can feed a stored case (default 200000)",
    )
    parser.add_argument(
        "--server-python", default=sys.executable, help="the interpreter that runs the server"
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], help="an extra flag for serve (repeat)"
    )
    parser.add_argument(
        "--event-ids",
        choices=["random", "time-ordered"],
        default="random",
        help="random (version 4) UUIDs, as most Pinpoint clients send, or time-ordered"
        " (version 7) ones, as the Homing SDK sends (default: random)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every case this many times, in turn, and compare medians (default 1)",
    )
    parser.add_argument(
        "--grown",
        type=Path,
        help="also store into a copy of this database (say, one bench/analytics_queries.py"
        " loaded), into its application --grown-app, beside the empty database (gzip off)",
    )
    parser.add_argument("--grown-app", default="benchapp", help="the app of --grown")
    parser.add_argument("--no-gzip", action="store_true", help="skip the gzipped cases")
    parser.add_argument(
        "--event-stream",
        action="store_true",
        help="also store with an event stream to a receiver on loopback (gzip off), beside"
        " the same store without",
    )
    parser.add_argument(
        "--in-process-hook",
        action="store_true",
        help="also store with an in-process event-stream hook installed as a plugin (gzip"
        " off), beside the same store without",
    )
    parser.add_argument(
        "--campaign",
        action="store_true",
        help="with --event-stream: that case also has a campaign triggered by events active",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and the log")
    return parser


async def _bench(args: argparse.Namespace, workdir: Path) -> int:
    per_case = int(args.max_rate * (args.duration + args.warmup) / EVENTS_PER_BATCH) + 1
    started = time.perf_counter()
    pools = build_pools(per_case, ordered_ids=args.event_ids == "time-ordered")
    raw_kb = sum(map(len, pools[False])) / len(pools[False]) / 1024
    gz_kb = sum(map(len, pools[True])) / len(pools[True]) / 1024
    print(
        f"{2 * per_case} distinct batches of {EVENTS_PER_BATCH} events, {args.event_ids} "
        "event ids, built in "
        f"{time.perf_counter() - started:.1f} s: {raw_kb:.1f} KB each, {gz_kb:.1f} KB gzipped"
    )
    print(
        f"each case: a fresh database and collector; {args.clients} clients, "
        f"{args.warmup:g} s warm-up, {args.duration:g} s measured; {args.rounds} round(s)\n"
    )

    rows: list[tuple[str, bool, Figures, Counters]] = []
    checks: list[str] = []  # one line per stored case: rows stored against events answered
    ok = True
    log = workdir / "server.log"
    kinds = ["ceiling", "stored"] + (["grown"] if args.grown else [])
    kinds += ["streamed"] if args.event_stream else []
    kinds += ["hooked"] if args.in_process_hook else []
    streamed: list[str] = []  # one line per streamed case: records received against stored
    gzips = (False,) if args.no_gzip else (False, True)
    for round_, kind, gzip in itertools.product(range(args.rounds), kinds, gzips):
        if kind in ("grown", "streamed", "hooked") and gzip:
            continue
        stored = kind != "ceiling"
        # A fresh database for each case: stored events cost more as the database
        # grows, and the cases must compare like with like; "grown" is a fresh copy of
        # --grown, events stored before into the same application.
        db = workdir / f"bench-{kind}-{gzip}-{round_}.db"
        before = 0
        if kind == "grown":
            shutil.copyfile(args.grown, db)
            # With its columnar copy, if it has one: without, the collector would spend the
            # case copying every day of --grown again, which is not what storing costs.
            copy = args.grown.with_name(args.grown.name + "-columnar")
            if copy.is_dir():
                shutil.copytree(copy, db.with_name(db.name + "-columnar"))
            with contextlib.closing(sqlite3.connect(db)) as conn:
                (before,) = conn.execute("SELECT count(*) FROM events").fetchone()
            created = subprocess.run(
                [args.server_python, "-m", "homing_collector", "--db", str(db), "keys",
                 "create", "--app", args.grown_app, "--role", "ingest", "--json"],
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
            key = json.loads(created.stdout)
            app_id, token = args.grown_app, key["token"]
        else:
            created = subprocess.run(
                [args.server_python, "-m", "homing_collector", "--db", str(db), "apps",
                 "create", "bench", "--json"],
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
            app = json.loads(created.stdout)
            app_id, token = app["application_id"], app["ingest"]["token"]
        env = _hook_plugin(workdir) if kind == "hooked" else None
        process, port = _start_server(args.server_python, db, log, args.server_arg, env)
        receiver = StreamReceiver()
        try:
            await _wait_healthy(port)
            if kind == "streamed":
                await receiver.start()
                admin = app["admin"]["token"]
                await _put_event_stream(port, app_id, admin, f"http://{HOST}:{receiver.port}/")
                if args.campaign:
                    await _create_event_campaign(
                        port, app_id, admin, f"http://{HOST}:{receiver.port}/custom"
                    )
            path = f"/v1/apps/{app_id}/events" + ("" if stored else "-parse-only")
            # The ceiling stores nothing, so it may go round its pool; the stored
            # cases send each batch once.
            bodies = iter(pools[gzip]) if stored else cycle(pools[gzip])
            figures, counters = await _run_case(
                port=port, server_pid=process.pid, path=path, token=token, gzip=gzip,
                bodies=bodies, clients=args.clients, warmup=args.warmup,
                duration=args.duration, stored=stored,
            )  # fmt: skip
            if kind == "streamed":
                streamed.append(
                    f"stream {db.name}: {receiver.records:,} records received in"
                    f" {receiver.batches:,} batches when the clients stopped,"
                    f" {counters.accepted:,} events answered 202"
                    + (f", {receiver.custom_calls:,} custom channel calls" if args.campaign else "")
                )
            if kind == "hooked":
                count_file = workdir / "hook-count"
                taken = int(count_file.read_text() or 0) if count_file.exists() else 0
                streamed.append(
                    f"hook {db.name}: {taken:,} records taken by the in-process hook when the"
                    f" clients stopped, {counters.accepted:,} events answered 202"
                )
                count_file.unlink(missing_ok=True)
        finally:
            _stop_server(process)
            await receiver.close()
        rows.append((kind, gzip, figures, counters))
        if stored:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                (stored_rows,) = conn.execute("SELECT count(*) FROM events").fetchone()
                # What the campaign stored for itself, beside the events sent.
                (sends,) = conn.execute(
                    "SELECT count(*) FROM events WHERE event_type = '_campaign.send'"
                ).fetchone()
            match = stored_rows - sends - before == counters.accepted
            ok = ok and match
            checks.append(
                f"check {db.name}: {stored_rows - sends - before:,} rows added to events"
                f" ({before:,} before"
                + (f"; and {sends:,} _campaign.send events" if sends else "")
                + f"), {counters.accepted:,} events answered 202: "
                + ("OK" if match else "MISMATCH")
            )
        if not args.keep:  # a stored database is ~1 GB
            for path in workdir.glob(db.name + "*"):  # with its -wal and -columnar
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        for error in counters.errors:
            print(f"  ! {kind} gzip={gzip}: {error}")

    print(
        f"{'case':<25}{'gzip':<6}{'events/s':>11}{'requests/s':>12}{'mean ms':>9}"
        f"{'server CPU':>12}{'bench CPU':>11}{'other CPU':>11}"
    )
    streamed_name = "stored, stream+campaign" if args.campaign else "stored, event stream"
    names = {"stored": "stored (PutEvents)", "ceiling": "ceiling (parse-only)",
             "grown": "stored, grown db", "streamed": streamed_name,
             "hooked": "stored, in-proc hook"}  # fmt: skip
    for kind, gzip, f, _ in rows:
        name = names[kind]
        print(
            f"{name:<25}{'on' if gzip else 'off':<6}{f.events_per_s:>11,.0f}"
            f"{f.requests_per_s:>12,.0f}{f.mean_ms:>9.1f}{f.server_cpu:>11.0%}"
            f"{f.client_cpu:>11.0%}{f.other_cpu:>11.0%}"
        )
    for gzip in gzips:
        rates = {
            kind: statistics.median(f.events_per_s for k, g, f, _ in rows if (k, g) == (kind, gzip))
            for kind in ("stored", "ceiling")
        }
        label = "median of the rounds" if args.rounds > 1 else "events/s"
        print(
            f"gzip {'on' if gzip else 'off'}: stored {rates['stored']:,.0f}, ceiling "
            f"{rates['ceiling']:,.0f} ({label}); stored / ceiling: "
            f"{rates['stored'] / rates['ceiling']:.1%}"
        )

    def beside_empty(kind: str, what: str, peer: str, target: str | None = None) -> None:
        """A case's median beside the stored case's on an empty database, gzip off."""
        rate = statistics.median(f.events_per_s for k, _, f, _ in rows if k == kind)
        empty = statistics.median(
            f.events_per_s for k, g, f, _ in rows if (k, g) == ("stored", False)
        )
        print(
            f"gzip off: stored {what} {rate:,.0f}, {peer} {empty:,.0f} events/s:"
            f" {rate / empty:.1%}" + (f" (target {target})" if target else "")
        )

    if args.grown:
        beside_empty("grown", f"into {args.grown.name}", "into an empty database", "85%")
    if args.event_stream:
        what = "an event stream" + (" and a webhook campaign" if args.campaign else "")
        beside_empty("streamed", f"with {what}", "with neither", "85%")
    if args.in_process_hook:
        beside_empty("hooked", "with an in-process event-stream hook", "without")
    for line in checks + streamed:
        print(line)
    if args.keep:
        print(f"kept {workdir}")
    errors = any(c.errors for *_, c in rows)
    return 0 if ok and not errors else 1


def main() -> int:
    args = _parser().parse_args()
    if args.duration <= 0 or args.warmup < 0 or args.clients < 1 or args.rounds < 1:
        raise SystemExit(
            "--duration, --clients and --rounds must be positive, --warmup not negative"
        )
    workdir = Path(tempfile.mkdtemp(prefix="homing-bench-"))
    try:
        return asyncio.run(_bench(args, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir)


if __name__ == "__main__":
    sys.exit(main())
