"""How fast Pinpoint event-stream archives are read and turned back into events.

Writes a Firehose-style archive of --records records (gzip, one JSON record a line, as
Homing's export and Pinpoint's stream write them), then times, on the same file in the
same run:

- the ceiling: gzip in 1 MiB chunks, split at newlines, orjson.loads per line;
- read: homing_collector.hooks.archive.read_archive alone;
- read + convert: read_archive, then records.from_record on each record (which checks
  it with the collector's own event rule), which is what an import does before storing.

With --store it also times the whole command, `homing-collector import pinpoint-events`,
into a new database (a process of its own, wall-clock time: reading, checking, storing
the events, their endpoints and the rollups), beside the ceiling of the same run.

The records come from 20,000 devices; each device sends a session of 10 events in a
row and keeps its platform. With --sparse each record comes from the next device, on a
platform other than its last one: every record changes its endpoint and starts a new
hour of activity, the most work per event that the rollups and endpoints can be given.

With --concatenated the records are written with no separator at all, as Firehose does
by default, and read through the concatenated path (the ceiling still reads the same
records one per line). With --no-event-ids the records carry no event_id, as Pinpoint's
own do not, and each gets an id from its content.

    python bench/import.py [--records 1000000] [--concatenated] [--no-event-ids] [--sparse]
                           [--store]
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from homing.wire import format_timestamp
from homing_collector.hooks.archive import read_archive
from homing_collector.hooks.records import from_record, to_record

APP_ID = "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6"
EVENT_TYPES = ["_session.start", "_session.stop", "Played", "Level Up", "Purchase", "Share"]
SESSION_EVENTS = 10
PLATFORMS = [("android", "14"), ("ios", "17.4"), ("linux", "6.1")]


def _records(count: int, with_ids: bool, session_events: bool = True) -> Any:
    rng = random.Random(7)
    start = 1_760_000_000.0
    for n in range(count):
        # A device sends a session of SESSION_EVENTS events in a row, and keeps its platform.
        device = n // SESSION_EVENTS if session_events else n
        endpoint_id = f"endpoint-{device % 20000:05d}"
        platform, version = PLATFORMS[device % len(PLATFORMS)]
        at = start + n * 0.5
        event = {
            "EventType": EVENT_TYPES[n % len(EVENT_TYPES)],
            "Timestamp": format_timestamp(at),
            "Attributes": {"level": str(rng.randrange(50)), "screen": "main"},
            "Metrics": {"score": rng.random() * 1000},
            "AppPackageName": "com.example.game",
            "AppTitle": "Example",
            "AppVersionCode": "42",
            "SdkName": "homing-python",
            "ClientSdkVersion": "0.1.0",
            "Session": {"Id": f"s-{n // 20}", "StartTimestamp": format_timestamp(at - 60)},
        }
        endpoint = {
            "ChannelType": "CUSTOM",
            "EndpointStatus": "ACTIVE",
            "OptOut": "NONE",
            "Demographic": {"Platform": platform, "PlatformVersion": version, "Locale": "en_US",
                            "Make": "Example", "Model": "X1", "AppVersion": "1.4.2"},
        }  # fmt: skip
        record = to_record(APP_ID, endpoint_id, f"ev-{n:09d}", event, endpoint, int(at * 1000))
        if not with_ids:
            del record["event_id"]
        yield record


def _write(path: Path, count: int, with_ids: bool, separator: bytes, sessions: bool = True) -> None:
    with gzip.open(path, "wb", compresslevel=6) as out:
        batch: list[bytes] = []
        for record in _records(count, with_ids, sessions):
            batch.append(orjson.dumps(record) + separator)
            if len(batch) == 10_000:
                out.write(b"".join(batch))
                batch.clear()
        out.write(b"".join(batch))


def _timed(run: Callable[[], int]) -> tuple[int, float]:
    started = time.process_time()
    count = run()
    return count, time.process_time() - started


def _ceiling(path: Path) -> int:
    # The least a streaming reader can do: 1 MiB chunks, split at newlines, orjson.
    count = 0
    rest = b""
    with gzip.open(path, "rb") as unzipped:
        while chunk := unzipped.read(1 << 20):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                orjson.loads(line)
                count += 1
    if rest.strip():
        orjson.loads(rest)
        count += 1
    return count


def _read(path: Path) -> int:
    return sum(1 for item in read_archive(path) if item.record is not None)


def _read_convert(path: Path) -> int:
    count = 0
    for item in read_archive(path):
        if item.record is not None:
            from_record(item.record)
            count += 1
    return count


def _store(path: Path, db: Path) -> tuple[int, float, float]:
    """Run `homing-collector import pinpoint-events` on the archive: (events stored,
    wall-clock seconds, CPU seconds of the command and its writer process)."""
    command = [sys.executable, "-m", "homing_collector", "--db", str(db)]
    created = subprocess.run(
        [*command, "apps", "create", "bench", "--json"], capture_output=True, check=True
    )
    app_id = orjson.loads(created.stdout)["application_id"]
    started = time.perf_counter()
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [*command, "import", "pinpoint-events", app_id, str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    if result.returncode != 0:
        print(result.stdout, result.stderr, file=sys.stderr)
        return 0, seconds, cpu_seconds
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM events").fetchone()
    return stored, seconds, cpu_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--concatenated", action="store_true")
    parser.add_argument("--no-event-ids", action="store_true")
    parser.add_argument(
        "--sparse", action="store_true",
        help="each record from another device than the one before, on another platform",
    )  # fmt: skip
    parser.add_argument(
        "--store", action="store_true", help="also time the import command into a database"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        lines = Path(tmp) / "lines.gz"
        _write(lines, args.records, not args.no_event_ids, b"\n", not args.sparse)
        target = lines
        if args.concatenated:
            target = Path(tmp) / "concatenated.gz"
            _write(target, args.records, not args.no_event_ids, b"", not args.sparse)
        size = os.path.getsize(target)
        print(
            f"{args.records:,} records, {size / 1e6:.1f} MB gzip, "
            f"{'concatenated' if args.concatenated else 'one per line'}, "
            f"{'without' if args.no_event_ids else 'with'} event_id; CPU seconds of this process"
        )
        results = [
            ("ceiling: chunks, split, orjson.loads", _timed(lambda: _ceiling(lines))),
            ("read_archive", _timed(lambda: _read(target))),
            ("read_archive + from_record", _timed(lambda: _read_convert(target))),
        ]
        stored = _store(target, Path(tmp) / "bench.db") if args.store else None
    ceiling = results[0][1][0] / results[0][1][1]
    for name, (count, seconds) in results:
        if count != args.records:
            print(f"{name}: read {count} records, expected {args.records}", file=sys.stderr)
            return 1
        rate = count / seconds
        print(f"{name:40s} {rate:>12,.0f} records/s  ({rate / ceiling:.0%} of the ceiling)")
    if stored is not None:
        count, seconds, cpu_seconds = stored
        if count != args.records:
            print(f"import: stored {count} events, expected {args.records}", file=sys.stderr)
            return 1
        rate = count / seconds
        print(
            f"{'import pinpoint-events, wall-clock':40s} {rate:>12,.0f} records/s  "
            f"({rate / ceiling:.0%} of the ceiling; target 50,000)"
        )
        print(f"{'  per CPU second (both processes)':40s} {count / cpu_seconds:>12,.0f} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
