"""Importing Pinpoint history into an application, and exporting its events back out.

An import reads event-stream archives (`hooks.archive`), turns each record into the
event PutEvents would have got (`hooks.records.from_record`, which checks it with the
collector's own event rule), and stores the events in batches through the storage's
PutEvents path, with their endpoint updates and the rollups, so the analytics of
imported history are those of events sent live. An event is stored once by its key, so
an archive imported twice, or a record Firehose delivered twice, is stored once.

Unlike PutEvents, an import hands the writer no rollups summary: the writer, a process
of its own, sums the rows up as it stores them. Reading, checking and re-encoding the
records take more CPU than storing them, so the summing goes to the process that would
otherwise wait for the next batch.

An export writes the events of a time range as event-stream records
(`hooks.records.Records`), which an import reads back.

Both stream: an import holds a batch of events, an export a page.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import IO, Any

import orjson

from homing import limits
from homing.wire import WireError, check_endpoint, format_timestamp
from homing_collector import endpoints
from homing_collector.hooks.archive import Item, read_stream
from homing_collector.hooks.records import Records, from_record
from homing_collector.storage.base import Endpoint, EndpointUpdate, EventRow, Storage
from homing_collector.storage.events import HOUR_MS
from homing_collector.storage.history import cutoff_hour

# Events per storage call. The writer holds the database for one batch at a time, so a
# collector serving on the same file waits at most that long between its own commits.
BATCH_EVENTS = 2000
IN_FLIGHT = 2  # batches handed to the storage and not yet stored
EXPORT_PAGE = 2000
_SKEW_MS = limits.MAX_FUTURE_SKEW_SECONDS * 1000
_MAX_ARRIVAL_MS = 253402300799999  # 9999-12-31T23:59:59.999Z
_LAST_UPDATES = 100_000  # endpoints whose last update an import remembers
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Refusal:
    """A record, or an endpoint update, that was not stored, and why."""

    path: str
    line: int
    message: str  # "field: rule"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class ImportStats:
    files: int = 0
    records: int = 0  # read, good or bad
    stored: int = 0  # events stored now
    duplicates: int = 0  # events stored before (or twice in the archives)
    expired: int = 0  # older than the application's retention period: not stored
    refused: int = 0  # records refused
    endpoints_refused: int = 0  # endpoint updates refused (their events are stored)
    bytes_done: int = 0  # of the files as they are on disk (gzip or not), files done
    bytes_in_file: int = 0  # of the file being read
    bytes_total: int = 0
    started: float = field(default_factory=time.monotonic)


class ArchiveError(ValueError):
    """A path to import from that is not there or cannot be read."""


def archive_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The files named, and those under the directories named, in order of path."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = [p for p in sorted(path.rglob("*")) if p.is_file()]
            files.extend(p for p in found if not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise ArchiveError(f"{path}: no such file or directory")
    return files


class _Batch:
    def __init__(self) -> None:
        self.rows: list[EventRow] = []
        self.lines: list[int] = []  # each row's line
        self.files: list[tuple[int, str]] = []  # (first row, file) where the file changes
        self.updates: list[EndpointUpdate] = []
        self.update_where: dict[str, tuple[str, int]] = {}

    def paths(self) -> Iterator[str]:
        """The file of each row."""
        ends = [first for first, _ in self.files[1:]] + [len(self.rows)]
        for (first, name), end in zip(self.files, ends, strict=True):
            yield from repeat(name, end - first)


async def import_events(
    storage: Storage,
    app_id: str,
    files: Sequence[Path],
    *,
    report: Callable[[Refusal], None],
    progress: Callable[[ImportStats], None] | None = None,
    now: float | None = None,
    batch_events: int = BATCH_EVENTS,
) -> ImportStats:
    """Import the archive `files` into the application; `report` is called for each
    record or endpoint update refused, `progress` every few thousand records."""
    now = time.time() if now is None else now
    now_ms = int(now * 1000)
    latest_ms = now_ms + _SKEW_MS
    days = await storage.get_retention(app_id)
    # An event older than the retention period would be deleted at the next sweep, and
    # then stored (and counted) again by the next import of the same archive.
    keep_from = None if days is None else cutoff_hour(now_ms, days)
    merge = partial(endpoints.merge, app_id, now=format_timestamp(now))
    stats = ImportStats(bytes_total=sum(f.stat().st_size for f in files))
    last_updates: dict[str, Endpoint] = {}
    batch = _Batch()
    in_flight: deque[asyncio.Future[None]] = deque()

    async def submit(full: _Batch) -> None:
        # Stored while the next batches are read (by the storage's writer, a thread or a
        # process of its own); the storage keeps them in order.
        while len(in_flight) >= IN_FLIGHT:
            await in_flight.popleft()
        in_flight.append(asyncio.ensure_future(_store(storage, app_id, full, merge, stats, report)))

    rows, lines = batch.rows, batch.lines
    dumps = orjson.dumps
    for path in files:
        name = str(path)
        stats.files += 1
        batch.files.append((len(rows), name))
        with open(path, "rb") as raw:
            for line, _offset, record, error in _items(raw):
                stats.records += 1
                if stats.records & 1023 == 0:
                    stats.bytes_in_file = raw.tell()
                    if progress is not None:
                        progress(stats)
                if record is None:
                    stats.refused += 1
                    report(Refusal(name, line, error))
                    continue
                try:
                    endpoint_id, event_id, event, update = from_record(record)
                    body = dumps(event)
                    if len(body) > limits.MAX_EVENT_BYTES:
                        raise WireError(
                            "record", f"is {len(body)} bytes as an event; the limit is "
                            f"{limits.MAX_EVENT_BYTES} bytes",
                        )  # fmt: skip
                    # Each record carries its endpoint whole: check and store a change,
                    # not each copy.
                    if update is not None and last_updates.get(endpoint_id) == update:
                        update = None
                    if update is not None:
                        check_endpoint(update, "endpoint")
                except WireError as exc:
                    stats.refused += 1
                    report(Refusal(name, line, str(exc)))
                    continue
                ts: int = record["event_timestamp"]  # checked by from_record
                if ts > latest_ms:
                    ts = now_ms  # as PutEvents stores it; the body keeps the original
                if keep_from is not None and ts // HOUR_MS < keep_from:
                    stats.expired += 1
                    continue
                arrival = record.get("arrival_timestamp")
                if type(arrival) is not int or not 0 <= arrival <= _MAX_ARRIVAL_MS:
                    # History, not news: what looks at recent arrivals (the campaign
                    # triggers' recovery at start) must not take it for new events.
                    arrival = ts
                session = event.get("Session")
                session_id = session["Id"] if session else None
                event_type = event["EventType"]
                rows.append(
                    EventRow(endpoint_id, event_id, event_type, ts, arrival, session_id, body)
                )
                lines.append(line)
                if update is not None:
                    if len(last_updates) >= _LAST_UPDATES:
                        last_updates.clear()
                    last_updates[endpoint_id] = update
                    batch.updates.append(EndpointUpdate(endpoint_id, update))
                    batch.update_where[endpoint_id] = (name, line)
                if len(rows) >= batch_events:
                    await submit(batch)
                    batch = _Batch()
                    rows, lines = batch.rows, batch.lines
                    batch.files.append((0, name))
        stats.bytes_done += path.stat().st_size
        stats.bytes_in_file = 0
    if batch.rows or batch.updates:
        await submit(batch)
    while in_flight:
        await in_flight.popleft()
    if progress is not None:
        progress(stats)
    return stats


def _items(raw: IO[bytes]) -> Iterator[Item]:
    """The records of an open archive file, gzip or plain (what `read_archive` does,
    on a file whose position shows the progress)."""
    compressed = raw.read(2) == _GZIP_MAGIC
    raw.seek(0)
    if compressed:
        with gzip.GzipFile(fileobj=raw) as unzipped:
            yield from read_stream(unzipped)
    else:
        yield from read_stream(raw)


async def _store(
    storage: Storage,
    app_id: str,
    batch: _Batch,
    merge: Any,
    stats: ImportStats,
    report: Callable[[Refusal], None],
) -> None:
    result = await storage.put_events(
        app_id,
        batch.updates,
        batch.rows,
        merge=merge,
        max_event_types=limits.MAX_EVENT_TYPES_PER_APP,
        max_user_endpoints=limits.MAX_ENDPOINTS_PER_USER,
    )
    accepted = len(batch.rows)
    if result.rejected_types:
        for row, path, line in zip(batch.rows, batch.paths(), batch.lines, strict=True):
            if row.event_type in result.rejected_types:
                accepted -= 1
                stats.refused += 1
                report(Refusal(path, line, (
                    f"event_type: {row.event_type!r} is new and the application already has "
                    f"{limits.MAX_EVENT_TYPES_PER_APP} event types, the limit"
                )))  # fmt: skip
    stats.stored += result.stored
    stats.duplicates += accepted - result.stored
    for endpoint_id, message in sorted(result.endpoint_errors.items()):
        path, line = batch.update_where[endpoint_id]
        stats.endpoints_refused += 1
        report(Refusal(path, line, f"endpoint {endpoint_id} not updated: {message}"))


_NO_ENDPOINT: Endpoint = {}


async def export_events(
    storage: Storage,
    app_id: str,
    lo_ms: int,
    hi_ms: int,
    out: IO[bytes],
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the application's events with lo_ms <= Timestamp < hi_ms to `out` as
    event-stream records, one JSON object a line, each with its endpoint as stored now;
    return how many."""
    count = 0
    after = None
    known: dict[str, Endpoint] = {}
    while True:
        page = await storage.events_page(app_id, lo_ms, hi_ms, after=after, limit=EXPORT_PAGE)
        if not page:
            return count
        missing = list({e.endpoint_id for e in page if e.endpoint_id not in known})
        if len(known) + len(missing) > _LAST_UPDATES:
            known.clear()
            missing = list({e.endpoint_id for e in page})
        found = await storage.get_endpoints(app_id, missing)
        for endpoint_id in missing:
            known[endpoint_id] = found.get(endpoint_id, _NO_ENDPOINT)
        lines = []
        make = Records(app_id).make
        for e in page:
            endpoint = known[e.endpoint_id]
            record = make(
                e.endpoint_id, e.event_id, orjson.loads(e.body),
                endpoint if endpoint is not _NO_ENDPOINT else None, e.arrival,
            )  # fmt: skip
            lines.append(orjson.dumps(record))
        out.write(b"\n".join(lines) + b"\n")
        count += len(page)
        after = page[-1].key
        if progress is not None:
            progress(count)
