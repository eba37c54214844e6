"""What the events writer writes to SQLite's WAL per stored event, by table, for random
event ids beside time-ordered ones.

Every page a commit changes goes to the WAL whole (16 KB), so the bytes written per event
are mostly pages rewritten for a few new rows each: the rows themselves are ~0.6 KB. The
duplicate index (application, endpoint, event id) keeps each endpoint's ids together;
random ids land all over an endpoint's run, and the pages a batch rewrites grow with the
endpoint's history, while time-ordered ids (version 7 UUIDs, as the Homing SDK sends) land
at its end. This bench stores the same batches as bench/collector_ingest.py through the
writer's own code, in-process and without HTTP, onto a database grown to --events first,
then reads the WAL frames of --batches more and names the table or index of each page.
Its CPU figures are those of the whole path in one process, parsing and checking each
batch as the collector does and then the writer's work, and of the writer's work alone
(its transactions, commits included: what the events writer process spends on a batch
but reading it from the socket). The writer folds the rollups' entries every
--fold-every commits, as the events writer process does every 0.2 s (about 35 commits of
4 batches at 70,000 events/s); the folds are in both figures.

    python bench/wal_per_event.py [--events 1000000] [--batches 400] [--per-commit 4]
        [--fold-every 35]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sqlite3
import struct
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from homing import limits
from homing.wire import format_timestamp
from homing_collector import endpoints, ingest
from homing_collector.analytics.pending import encode_summary
from homing_collector.storage.sqlite import SQLiteStorage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import collector_ingest as load

APP_ID = "b" * 32
_WAL_HEADER, _FRAME_HEADER = 32, 24


def _job(storage: SQLiteStorage, body: bytes) -> Any:
    checked = ingest.check_events(orjson.loads(body), body_size=len(body), summarize=True)
    values = [value for row in checked.rows for value in (APP_ID, *row)]
    merge = partial(endpoints.merge, APP_ID, now=format_timestamp(checked.now))
    return storage.put_events_job(
        APP_ID, checked.updates, values, merge, limits.MAX_EVENT_TYPES_PER_APP,
        limits.MAX_ENDPOINTS_PER_USER, encode_summary(checked.summary),
    )  # fmt: skip


def _store(
    storage: SQLiteStorage, conn: sqlite3.Connection, bodies: list[bytes], per: int, fold: int
) -> float:
    """Store `bodies`, `per` a transaction, and fold the rollups' entries every `fold`
    transactions and at the end; return the CPU seconds of the transactions."""
    writing = 0.0
    for n, start in enumerate(range(0, len(bodies), per), start=1):
        jobs = [(_job(storage, body), False) for body in bodies[start : start + per]]
        started = time.process_time()
        outcomes = storage.commit_jobs(conn, jobs)
        if n % fold == 0 or start + per >= len(bodies):
            storage.fold_entries(conn)
        writing += time.process_time() - started
        for value, ok in outcomes:
            if not ok:
                raise value
    return writing


def measure(ordered: bool, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    warm = args.events // load.EVENTS_PER_BATCH
    bodies = load.make_batches(7, warm + args.batches, gzip=False, ordered_ids=ordered)
    path = workdir / f"wal-{'ordered' if ordered else 'random'}.db"
    storage = SQLiteStorage(path, synchronous="NORMAL", rollups=True)
    conn = storage.open_writer()
    conn.execute("INSERT INTO apps (id, name, created_at) VALUES (?, 'bench', 'now')", (APP_ID,))
    with contextlib.closing(sqlite3.connect(path)) as checkpointer:
        for start in range(0, warm, 1000):
            _store(
                storage,
                conn,
                bodies[start : min(start + 1000, warm)],
                args.per_commit,
                args.fold_every,
            )
            checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        started = time.process_time()
        writing = _store(storage, conn, bodies[warm:], args.per_commit, args.fold_every)
        cpu = time.process_time() - started
        wal = (path.parent / (path.name + "-wal")).read_bytes()
        (page_size,) = struct.unpack_from(">I", wal, 8)
        owners = dict(checkpointer.execute("SELECT pageno, name FROM dbstat"))
    frames: collections.Counter[str] = collections.Counter()
    for offset in range(_WAL_HEADER, len(wal), _FRAME_HEADER + page_size):
        (page,) = struct.unpack_from(">I", wal, offset)
        frames[owners.get(page, "(freed)")] += 1
    storage.close_writer(conn)
    events = args.batches * load.EVENTS_PER_BATCH
    commits = -(-args.batches // args.per_commit)
    return {
        "bytes_per_event": sum(frames.values()) * page_size / events,
        "frames_per_commit": sum(frames.values()) / commits,
        "by_table": {name: count / commits for name, count in frames.most_common(6)},
        "cpu_us_per_event": 1e6 * cpu / events,
        "writer_us_per_event": 1e6 * writing / events,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events stored first")
    parser.add_argument("--batches", type=int, default=400, help="batches of 100 measured")
    parser.add_argument("--per-commit", type=int, default=4, help="batches per transaction")
    parser.add_argument(
        "--fold-every", type=int, default=35, help="transactions between folds of the rollups"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="homing-wal-") as tmp:
        results = {ordered: measure(ordered, args, Path(tmp)) for ordered in (False, True)}
    print(
        f"{args.batches} batches of {load.EVENTS_PER_BATCH} events, {args.per_commit} per "
        f"commit, onto {args.events:,} events stored first\n"
    )
    print(
        f"{'event ids':<14}{'WAL B/event':>12}{'frames/commit':>15}{'CPU us/event':>14}"
        f"{'writer us/event':>17}"
    )
    for ordered, r in results.items():
        print(
            f"{'time-ordered' if ordered else 'random':<14}{r['bytes_per_event']:>12,.0f}"
            f"{r['frames_per_commit']:>15.1f}{r['cpu_us_per_event']:>14.2f}"
            f"{r['writer_us_per_event']:>17.2f}"
        )
    for ordered, r in results.items():
        tables = ", ".join(f"{name} {count:.1f}" for name, count in r["by_table"].items())
        print(f"frames per commit, {'time-ordered' if ordered else 'random'}: {tables}")
    saved = 1 - results[True]["bytes_per_event"] / results[False]["bytes_per_event"]
    print(f"time-ordered ids write {saved:.0%} less to the WAL per event")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
