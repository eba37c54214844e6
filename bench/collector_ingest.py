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
records it got (after the measured window: decompressing them is the receiver's work, not
the collector's), so the stream's lag at the end of the case is printed too. Each stored
case also prints the server's CPU per event by process (the collector, its events writer,
its columnar copy, its event-stream process). Every case starts its clients SETUP
seconds after its server answers, the time the event stream and campaign take to be set.

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

With ``--postgres``, three more cases (gzip off), each on 2 collector processes, on a
fresh database: SQLite served by ``serve --workers 2``; a new PostgreSQL database served
by two ``serve`` processes on two ports, the clients spread over both, as separate nodes
of a scaled-out deployment run; and the same with HOMING_ROLLUPS=0, what keeping the
analytics rollups at ingest costs. ``--postgres URL`` names a server whose user may
CREATE DATABASE (the bench makes and drops one per case); ``--postgres`` alone starts a
throwaway cluster as the tests do (tests/pg.py). The PostgreSQL server's CPU is read from
/proc (the postmaster, its living children and those it reaped), so it is counted only when
the server runs on this machine. Its ratio to SQLite's events/s is issue 17's target.
With ``--statements`` as well, each PostgreSQL case ends with its costliest statements per
event stored, from pg_stat_statements (which the throwaway cluster then loads).

    python bench/collector_ingest.py [--duration 8] [--clients 16] [--warmup 2]
        [--event-ids random|time-ordered] [--rounds 1] [--no-gzip]
        [--grown DB [--grown-app benchapp]] [--event-stream [--campaign]] [--in-process-hook]
        [--postgres [URL] [--statements]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip as gzip_module
import itertools
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import cycle
from pathlib import Path
from typing import Any

import orjson
import serve

from homing._events import _event_id

HOST = "127.0.0.1"
EVENTS_PER_BATCH = 100
_CHUNK = 1000  # batches built per task
START_TIMEOUT = 30.0  # seconds for the server to come up
REPLY_TIMEOUT = 30.0  # seconds for one answer
STOP_TIMEOUT = 60.0  # seconds for the server to commit and exit on SIGTERM
# Seconds from a server's answering /healthz to its clients' start: enough for the event
# stream and the campaign to be set (about 1.7 s, most of it waiting for the scheduler's
# tick). Every case waits as long, so that the server's timed work (the columnar copy
# looks for events 2 s after its start, then every 10 s) falls at the same point of each
# case's window: with no wait, a look that copied ten seconds of events fell in the
# window of the event-stream case and not in that of the store without it, and added up
# to 8 us a stored event to it.
SETUP = 2.5
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
    db_cpu: float  # the PostgreSQL server's processes (0 on SQLite)
    client_cpu: float
    other_cpu: float  # everything else on the machine: other processes, the kernel's own work
    mean_ms: float
    roles: dict[str, float] = field(default_factory=dict)  # server_cpu by process, if one server

    def us_per_event(self, share: float) -> float:
        """CPU microseconds per event stored of a share of one core."""
        return 1e6 * share / self.events_per_s if self.events_per_s else float("nan")


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


def _cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """CPU time of a process and of its living children (the collector's events writer,
    the workers of `serve --workers`); with `reaped`, also of the children it waited for
    (a PostgreSQL postmaster's backends and autovacuum workers that ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except OSError:
        return float("nan")
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    own = ticks / os.sysconf("SC_CLK_TCK")
    # A child that ended meanwhile counts nothing here (with `reaped`, its parent's count
    # has it once it is waited for), rather than making the whole figure nan.
    return own + sum(0.0 if math.isnan(cpu) else cpu for cpu in map(_cpu_seconds, children))


def _roles(pid: int) -> dict[str, float]:
    """CPU seconds of a collector's process and of each of its children, by role. The
    workers of serve --workers are its children, and each has children of its own."""
    found = {"collector": _cpu_seconds(pid) - sum(map(_cpu_seconds, _children(pid)))}
    for child in _children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        role = (
            "stream" if b"stream_process" in command
            else "columnar copy" if b"columnar_process" in command
            else "events writer" if b"events_process" in command
            else None
        )  # fmt: skip
        if role is None:  # a worker
            for worker_role, seconds in _roles(child).items():
                found[worker_role] = found.get(worker_role, 0.0) + seconds
        else:
            found[role] = found.get(role, 0.0) + _cpu_seconds(child)
    return found


def _children(pid: int) -> list[int]:
    try:
        return [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except OSError:
        return []


def _no_cpu() -> float:
    return 0.0


async def _run_case(
    *,
    ports: list[int],
    server_pids: list[int],
    db_cpu: Callable[[], float],
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
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nAccept-Encoding: identity\r\n"
    ).encode()
    stop = asyncio.Event()
    counters = Counters()
    latency = [0.0]
    tasks = [
        asyncio.create_task(_client(port, head, gzip, bodies, stop, counters, latency, stored))
        for port in itertools.islice(cycle(ports), clients)
    ]

    def server_seconds() -> float:
        return sum(_cpu_seconds(pid) for pid in server_pids)

    def roles() -> dict[str, float]:
        return _roles(server_pids[0]) if len(server_pids) == 1 else {}

    await asyncio.sleep(warmup)
    t0, r0, e0, l0 = time.perf_counter(), counters.requests, counters.accepted, latency[0]
    s0, d0, c0, m0 = server_seconds(), db_cpu(), time.process_time(), _machine_busy_seconds()
    g0 = roles()
    while time.perf_counter() - t0 < duration and not all(t.done() for t in tasks):
        await asyncio.sleep(0.05)
    t1, r1, e1, l1 = time.perf_counter(), counters.requests, counters.accepted, latency[0]
    s1, d1, c1, m1 = server_seconds(), db_cpu(), time.process_time(), _machine_busy_seconds()
    g1 = roles()
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
            db_cpu=(d1 - d0) / elapsed,
            client_cpu=(c1 - c0) / elapsed,
            other_cpu=max(0.0, (m1 - m0) - (s1 - s0) - (d1 - d0) - (c1 - c0)) / elapsed,
            mean_ms=1000 * (l1 - l0) / max(r1 - r0, 1),
            roles={role: (g1[role] - g0.get(role, 0.0)) / elapsed for role in g1},
        ),
        counters,
    )


# -- the server ---------------------------------------------------------------------------


def _start_server(
    python: str, db: Path | str, log: Path, extra: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    process, url = serve.start(
        db, log, "--bench-routes", *extra, env=env, python=python, timeout=START_TIMEOUT
    )
    return process, serve.port(url)


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
    whose calls it counts.

    A batch is kept as it came and its records counted when `records` is read: a real
    receiver's work on them (decompressing, parsing) is its own, on its own machine, and
    done here meanwhile it took a bench process's share of the cores that the collector
    is measured on (about 1.5 us of CPU an event on 2 cores)."""

    def __init__(self) -> None:
        self._records = 0
        self._unread: list[bytes] = []  # batches received, their records not counted yet
        self.batches = 0
        self.custom_calls = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def records(self) -> int:
        """The records of the batches received so far."""
        unread, self._unread = self._unread, []
        self._records += sum(gzip_module.decompress(body).count(b"\n") for body in unread)
        return self._records

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
                    self._unread.append(body)
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


# -- PostgreSQL ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
PG_KINDS = ("pg", "pg-no-rollups")


class Postgres:
    """The server of the PostgreSQL cases: named by a URL, or a throwaway cluster."""

    def __init__(self, url: str | None, *, statements: bool = False) -> None:
        self._cluster: Any = None
        if not url:
            sys.path.insert(0, str(ROOT))
            from tests.pg import start_cluster

            self._cluster = start_cluster()
            url = self._cluster.url("postgres")
            if statements:  # a module the server loads as it starts: restart it
                with psycopg().connect(url, autocommit=True) as conn:
                    conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
                data = str(self._cluster.directory / "data")
                self._cluster.run("pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
                self._cluster.start()
        self.admin_url = url
        if statements:
            try:
                with psycopg().connect(url, autocommit=True) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                    conn.execute("SELECT 1 FROM pg_stat_statements LIMIT 1")
            except psycopg().Error as exc:
                self.close()
                raise SystemExit(
                    "--statements needs pg_stat_statements in the server's"
                    f" shared_preload_libraries: {exc}"
                ) from None
        with psycopg().connect(url, autocommit=True) as conn:
            (backend,) = conn.execute("SELECT pg_backend_pid()").fetchone() or (0,)
            (self.version,) = conn.execute("SHOW server_version").fetchone() or ("?",)
        # The postmaster is the parent of every backend; off this machine there is no CPU
        # to read (nan).
        try:
            stat = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
            self.postmaster = int(stat[1])
        except OSError:
            self.postmaster = 0

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.postmaster, reaped=True) if self.postmaster else float("nan")

    def create(self, name: str) -> str:
        with psycopg().connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.admin_url.rpartition('/')[0]}/{name}"

    def statements(self, database: str, events: int, top: int = 8) -> list[str]:
        """What the server ran for `database`, per event stored: the costliest statements
        by time in the executor (lock waits included: wall time, not CPU)."""
        with psycopg().connect(self.admin_url) as conn:
            found = conn.execute(
                "SELECT calls, total_exec_time, query FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s"
                " ORDER BY total_exec_time DESC",
                (database,),
            ).fetchall()
        batches = max(events / EVENTS_PER_BATCH, 1)
        calls = sum(row[0] for row in found)
        spent = sum(row[1] for row in found)
        lines = [
            f"statements {database}: {calls / batches:.1f} per batch of {EVENTS_PER_BATCH},"
            f" {1000 * spent / max(events, 1):.0f} us per event in the executor"
        ]
        for n, ms, query in found[:top]:
            lines.append(
                f"  {1000 * ms / max(events, 1):7.1f} us/event {n / batches:5.2f}/batch"
                f" {ms / n:8.2f} ms/call  {' '.join(query.split())[:90]}"
            )
        return lines

    def drop(self, url: str) -> None:
        name = url.rpartition("/")[2]
        with psycopg().connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.stop()
            shutil.rmtree(self._cluster.directory, ignore_errors=True)


def psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise SystemExit('--postgres needs psycopg: pip install "homing[postgres]"') from None
    return psycopg


def _count_events(db: Path | str) -> tuple[int, int]:
    """Rows in the events table, and how many of them a campaign stored for itself."""
    sql = "SELECT count(*), count(*) FILTER (WHERE event_type = '_campaign.send') FROM events"
    if isinstance(db, str):
        with psycopg().connect(db) as conn:
            total, sends = conn.execute(sql).fetchone()
    else:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            total, sends = conn.execute(sql).fetchone()
    return int(total), int(sends)


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
    parser.add_argument(
        "--postgres",
        nargs="?",
        const="",
        metavar="URL",
        help="also store into PostgreSQL (two serve processes) beside SQLite (serve --workers"
        " 2), with the rollups and without; URL: a server whose user may CREATE DATABASE;"
        " alone: a throwaway cluster",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="with --postgres: print what each PostgreSQL case's statements cost per event"
        " (pg_stat_statements: loaded into a throwaway cluster; a --postgres URL's server"
        " must have it in shared_preload_libraries)",
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

    kinds = ["ceiling", "stored"] + (["grown"] if args.grown else [])
    kinds += ["streamed"] if args.event_stream else []
    kinds += ["hooked"] if args.in_process_hook else []
    postgres = None
    if args.postgres is not None:
        kinds += ["sqlite-2", *PG_KINDS]
        postgres = Postgres(args.postgres, statements=args.statements)
        print(f"PostgreSQL {postgres.version}, server processes under pid {postgres.postmaster}")
    try:
        return await _cases(args, workdir, pools, kinds, postgres)
    finally:
        if postgres is not None:
            postgres.close()


async def _cases(
    args: argparse.Namespace,
    workdir: Path,
    pools: dict[bool, list[bytes]],
    kinds: list[str],
    postgres: Postgres | None,
) -> int:
    rows: list[tuple[str, bool, Figures, Counters]] = []
    checks: list[str] = []  # one line per stored case: rows stored against events answered
    ok = True
    log = workdir / "server.log"
    streamed: list[str] = []  # one line per streamed case: records received against stored
    profiles: list[str] = []  # with --statements: what each PostgreSQL case ran
    gzips = (False,) if args.no_gzip else (False, True)
    for round_, kind, gzip in itertools.product(range(args.rounds), kinds, gzips):
        if kind not in ("ceiling", "stored") and gzip:
            continue
        stored = kind != "ceiling"
        # A fresh database for each case: stored events cost more as the database
        # grows, and the cases must compare like with like; "grown" is a fresh copy of
        # --grown, events stored before into the same application.
        db: Path | str = workdir / f"bench-{kind}-{gzip}-{round_}.db"
        if kind in PG_KINDS:
            assert postgres is not None
            db = postgres.create(f"bench_{kind.replace('-', '_')}_{round_}")
        before = 0
        if kind == "grown":
            assert isinstance(db, Path)
            shutil.copyfile(args.grown, db)
            # With its columnar copy, if it has one: without, the collector would spend the
            # case copying every day of --grown again, which is not what storing costs.
            copy = args.grown.with_name(args.grown.name + "-columnar")
            if copy.is_dir():
                shutil.copytree(copy, db.with_name(db.name + "-columnar"))
            # The copy leaves gigabytes of dirty pages that the kernel would write back
            # while the case runs, slowing every commit: a grown database is not a file
            # copied a moment ago. Write them out first.
            os.sync()
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
        env = {"HOMING_ROLLUPS": "0"} if kind == "pg-no-rollups" else env
        extra = [*args.server_arg, "--workers", "2"] if kind == "sqlite-2" else args.server_arg
        # PostgreSQL: two collectors on two ports, as two nodes of one deployment run.
        processes: list[subprocess.Popen[bytes]] = []
        ports: list[int] = []
        receiver = StreamReceiver()
        try:
            for _ in range(2 if kind in PG_KINDS else 1):
                process, port = _start_server(args.server_python, db, log, extra, env)
                processes.append(process)
                ports.append(port)
                await _wait_healthy(port)
            started = time.monotonic()
            if kind == "streamed":
                await receiver.start()
                admin = app["admin"]["token"]
                await _put_event_stream(port, app_id, admin, f"http://{HOST}:{receiver.port}/")
                if args.campaign:
                    await _create_event_campaign(
                        port, app_id, admin, f"http://{HOST}:{receiver.port}/custom"
                    )
            await asyncio.sleep(max(0.0, started + SETUP - time.monotonic()))
            path = f"/v1/apps/{app_id}/events" + ("" if stored else "-parse-only")
            # The ceiling stores nothing, so it may go round its pool; the stored
            # cases send each batch once.
            bodies = iter(pools[gzip]) if stored else cycle(pools[gzip])
            db_cpu = postgres.cpu_seconds if postgres and kind in PG_KINDS else _no_cpu
            figures, counters = await _run_case(
                ports=ports, server_pids=[p.pid for p in processes], db_cpu=db_cpu,
                path=path, token=token, gzip=gzip,
                bodies=bodies, clients=args.clients, warmup=args.warmup,
                duration=args.duration, stored=stored,
            )  # fmt: skip
            if kind == "pg" and isinstance(db, str):
                # The rollups' entries not folded yet: the work left beyond the figures.
                with psycopg().connect(db) as conn:
                    (waiting,) = conn.execute("SELECT count(*) FROM an_pending").fetchone()
                streamed.append(
                    f"rollups {db.rpartition('/')[2]}: {waiting:,} entries (batches) left to"
                    f" fold when the clients stopped, of {counters.accepted // 100:,} batches"
                )
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
            for process in processes:
                _stop_server(process)
            await receiver.close()
        rows.append((kind, gzip, figures, counters))
        if stored:
            # What the campaign stored for itself, beside the events sent.
            stored_rows, sends = _count_events(db)
            name = db.name if isinstance(db, Path) else db.rpartition("/")[2]
            if postgres is not None and isinstance(db, str) and args.statements:
                profiles += postgres.statements(name, stored_rows)
            match = stored_rows - sends - before == counters.accepted
            ok = ok and match
            checks.append(
                f"check {name}: {stored_rows - sends - before:,} rows added to events"
                f" ({before:,} before"
                + (f"; and {sends:,} _campaign.send events" if sends else "")
                + f"), {counters.accepted:,} events answered 202: "
                + ("OK" if match else "MISMATCH")
            )
        if isinstance(db, str):
            if not args.keep:
                assert postgres is not None
                postgres.drop(db)
        elif not args.keep:  # a stored database is ~1 GB
            for path in workdir.glob(db.name + "*"):  # with its -wal and -columnar
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        for error in counters.errors:
            print(f"  ! {kind} gzip={gzip}: {error}")

    print(
        f"{'case':<27}{'gzip':<6}{'events/s':>11}{'requests/s':>12}{'mean ms':>9}"
        f"{'server CPU':>12}{'db CPU':>8}{'bench CPU':>11}{'other CPU':>11}"
        f"{'server us/ev':>14}{'db us/ev':>10}{'bench us/ev':>13}"
    )
    streamed_name = "stored, stream+campaign" if args.campaign else "stored, event stream"
    names = {"stored": "stored (PutEvents)", "ceiling": "ceiling (parse-only)",
             "grown": "stored, grown db", "streamed": streamed_name,
             "hooked": "stored, in-proc hook", "sqlite-2": "stored, SQLite, 2 workers",
             "pg": "stored, PostgreSQL", "pg-no-rollups": "stored, PG, no rollups"}  # fmt: skip
    for kind, gzip, f, _ in rows:
        name = names[kind]
        print(
            f"{name:<27}{'on' if gzip else 'off':<6}{f.events_per_s:>11,.0f}"
            f"{f.requests_per_s:>12,.0f}{f.mean_ms:>9.1f}{f.server_cpu:>12.0%}"
            f"{f.db_cpu:>8.0%}{f.client_cpu:>11.0%}{f.other_cpu:>11.0%}"
            f"{f.us_per_event(f.server_cpu):>14.0f}{f.us_per_event(f.db_cpu):>10.0f}"
            f"{f.us_per_event(f.client_cpu):>13.0f}"
        )
    for kind, gzip, f, _ in rows:
        if kind != "ceiling" and f.roles:
            print(
                f"  server us/ev by process, {names[kind]} gzip {'on' if gzip else 'off'}: "
                + ", ".join(
                    f"{role} {f.us_per_event(share):.1f}" for role, share in f.roles.items()
                )
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
    if args.postgres is not None:

        def median(kind: str, value: Callable[[Figures], float]) -> float:
            return statistics.median(value(f) for k, _, f, _ in rows if k == kind)

        sqlite = median("sqlite-2", lambda f: f.events_per_s)
        for kind, what in (("pg", "with the rollups"), ("pg-no-rollups", "without rollups")):
            rate = median(kind, lambda f: f.events_per_s)
            print(
                f"gzip off, 2 collector processes: PostgreSQL {what} {rate:,.0f}, SQLite"
                f" {sqlite:,.0f} events/s: {rate / sqlite:.1%}"
                + (" (target 60%)" if kind == "pg" else "")
            )
        for kind in ("sqlite-2", *PG_KINDS):
            collectors = median(kind, lambda f: f.us_per_event(f.server_cpu))
            server = median(kind, lambda f: f.us_per_event(f.db_cpu))
            print(
                f"CPU per event, {names[kind]}: collectors {collectors:.0f} us"
                + (f", PostgreSQL server {server:.0f} us" if kind in PG_KINDS else "")
                + f", together {collectors + server:.0f} us"
            )
    for line in checks + streamed + profiles:
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
