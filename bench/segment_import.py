"""How fast an imported segment's file is read and stored, each beside its ceiling.

Writes a file of --rows endpoints (CSV, or newline-delimited JSON with --json), as
Pinpoint's import format has them, then times, on the same file in the same run:

- the ceiling: csv.reader over the file (or orjson.loads per line), nothing checked;
- read: homing_collector.campaigns.import_files.ImportReader, each row checked with
  UpdateEndpoint's rules;
- import: a whole job (import_jobs.run) into a fresh SQLite file, endpoints registered
  and the segment defined, as CreateImportJob, the upload route and the CLI run it.

    python bench/segment_import.py [--rows 200000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import tempfile
import time
from pathlib import Path

import orjson

from homing_collector.auth import generate_key
from homing_collector.campaigns import import_jobs
from homing_collector.campaigns.import_files import ImportReader
from homing_collector.models.imports import ImportJobRequest
from homing_collector.routes.apps import new_app
from homing_collector.storage.sqlite import SQLiteStorage


def write(path: Path, rows: int, as_json: bool) -> None:
    with path.open("w") as out:
        if not as_json:
            out.write(
                "Id,ChannelType,Address,User.UserId,Attributes.plan,Attributes.plan,"
                "Demographic.Platform,Location.Country,Metrics.score\n"
            )
        for i in range(rows):
            if as_json:
                row = {
                    "Id": f"e-{i}", "ChannelType": "CUSTOM", "Address": f"a-{i}",
                    "User": {"UserId": f"u-{i}"}, "Attributes": {"plan": ["pro", "team"]},
                    "Demographic": {"Platform": "android"}, "Location": {"Country": "FR"},
                    "Metrics": {"score": i % 7},
                }  # fmt: skip
                out.write(json.dumps(row) + "\n")
            else:
                out.write(f"e-{i},CUSTOM,a-{i},u-{i},pro,team,android,FR,{i % 7}\n")


def ceiling(path: Path, as_json: bool) -> int:
    with path.open("rb" if as_json else "r", newline=None if as_json else "") as file:
        if as_json:
            return sum(1 for line in file if orjson.loads(line))
        return sum(1 for _ in csv.reader(file)) - 1


def read(path: Path, file_format: str) -> int:
    with path.open("rb") as file:
        reader = ImportReader(file, file_format)
        count, done = 0, False
        while not done:
            good, bad, done = reader.batch(import_jobs.BATCH_ROWS)
            count += len(good) + len(bad)
        return count


async def store(path: Path, file_format: str, db: Path) -> int:
    storage = SQLiteStorage(db)
    await storage.start()
    try:
        app = new_app("bench")
        await storage.create_app(app)
        await storage.create_key(generate_key("admin", app.id).record)
        request = ImportJobRequest(
            Format=file_format,  # type: ignore[arg-type]
            S3Url=path.as_uri(),
            RoleArn="",
            SegmentName="bench",
        )
        plan = await import_jobs.plan(storage, app.id, request)
        job = import_jobs.new_job(app.id, plan, path.stat().st_size)
        await storage.create_import_job(job)
        await import_jobs.run(storage, job, plan, path.open("rb"))
        assert job.status == "COMPLETED", job.failures
        return job.total_processed
    finally:
        await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--json", action="store_true", help="newline-delimited JSON, not CSV")
    args = parser.parse_args()
    file_format = "JSON" if args.json else "CSV"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"endpoints.{file_format.lower()}"
        write(path, args.rows, args.json)
        size = path.stat().st_size
        print(f"{args.rows:,} rows, {size / 1e6:.1f} MB of {file_format}")
        db = Path(tmp) / "bench.db"
        results = []
        for name, run in [
            ("ceiling (parse only)", lambda: ceiling(path, args.json)),
            ("read and check", lambda: read(path, file_format)),
            ("import (store, define)", lambda: asyncio.run(store(path, file_format, db))),
        ]:
            started = time.perf_counter()
            count = run()
            elapsed = time.perf_counter() - started
            assert count == args.rows, (name, count)
            results.append(elapsed)
            print(f"  {name:<24} {args.rows / elapsed:>10,.0f} rows/s  ({elapsed:.2f} s)")
        print(f"import costs {results[2] / results[0]:.1f}x the ceiling")


if __name__ == "__main__":
    main()
