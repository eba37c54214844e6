"""CPU that the sealer spends per event copied into the columnar copy, in one process.

Stores --events events (the batches of bench/collector_ingest.py, through the writer's own
code, as bench/wal_per_event.py does) into a fresh SQLite file, then times the sealer's two
copies as the collector makes them (storage/columnar.py): `rebuild`, the first copy of a
day, of those events, and then `append` of --events more, which arrived past the
watermark. CPU is the process's, DuckDB's threads included; "wall" counts the syncs of
the files too. Every copied row is counted back from the Parquet files.

    python bench/columnar_seal.py [--events 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import collector_ingest as load
import wal_per_event as store

from homing_collector.storage import columnar
from homing_collector.storage.sqlite import SQLiteStorage


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _copy(
    conn: sqlite3.Connection, writer: sqlite3.Connection, step: object
) -> tuple[int, float, float]:
    """Run copies made by `step()` and commit each; return rows, CPU and wall seconds."""
    rows, cpu, wall = 0, _cpu(), time.perf_counter()
    while (sealed := step()) is not None:  # type: ignore[operator]
        writer.execute("BEGIN IMMEDIATE")
        assert columnar.commit(writer, sealed)
        writer.execute("COMMIT")
        rows += sealed.rows
        if not sealed.rows and not sealed.days:
            break
    return rows, _cpu() - cpu, time.perf_counter() - wall


def measure(events: int, workdir: Path) -> list[str]:
    batches = events // load.EVENTS_PER_BATCH
    bodies = load.make_batches(7, 2 * batches, gzip=False)
    path = workdir / "seal.db"
    storage = SQLiteStorage(path, rollups=False)
    writer = storage.open_writer()
    writer.execute("INSERT INTO apps (id, name, created_at) VALUES (?, 'bench', 'now')",
                   (store.APP_ID,))  # fmt: skip
    root = columnar.directory(path)
    reader = sqlite3.connect(path)
    store._store(storage, writer, bodies[:batches], 8)
    # No day is sealed yet: the watermark passes the events without copying them.
    _copy(reader, writer, lambda: columnar.append(reader, root, 10**9))
    days = iter(columnar.unsealed_days(reader, root))
    rebuilt = _copy(reader, writer, lambda: next((columnar.rebuild(reader, root, *key)
                                                  for key in days), None))  # fmt: skip
    store._store(storage, writer, bodies[batches:], 8)
    appended = _copy(reader, writer, lambda: columnar.append(reader, root, 250_000))
    (copied,) = (
        columnar._duck()
        .execute(
            f"SELECT count(*) FROM read_parquet({columnar._literal(str(root / '**/*.parquet'))})"
        )
        .fetchone()
    )
    assert copied == rebuilt[0] + appended[0] == 2 * events, (copied, rebuilt, appended)
    storage.close_writer(writer)
    reader.close()
    return [
        f"{name:8} {rows:>9,} events  CPU {1e6 * cpu / rows:5.1f} us/event"
        f"  wall {1e6 * wall / rows:5.1f} us/event"
        for name, (rows, cpu, wall) in (("rebuild", rebuilt), ("append", appended))
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events of each copy")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="homing-seal-") as workdir:
            for line in measure(args.events, Path(workdir)):
                print(f"round {round_}  {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
