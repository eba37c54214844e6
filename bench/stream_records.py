"""CPU of making an event stream's batches: the records of stored events, as NDJSON,
gzipped, per record, as the event-stream process makes them (hooks/streams.py
make_batch), on the PutEvents batches of collector_ingest.py (100 events of one device
each, 2,000 devices).

No server and no database: the rows are what the stream would read, built from the
batches, so the figure is the Python work alone, the best of a few passes. Beside it,
its peer in the same run: each body read whole (orjson.loads) and made a line by
Records.line, as the stream did before it decoded only what a record takes apart.

    python bench/stream_records.py [--records 40000] [--passes 5]
"""

from __future__ import annotations

import argparse
import sys
import time

import collector_ingest as ingest
import orjson

from homing_collector.hooks.delivery import ndjson_gzip_lines
from homing_collector.hooks.records import Records
from homing_collector.hooks.streams import BATCH_EVENTS, make_batch
from homing_collector.storage.base import StreamRow


def _rows(records: int) -> tuple[list[StreamRow], dict[str, bytes]]:
    rows: list[StreamRow] = []
    endpoints: dict[str, bytes] = {}
    bodies = ingest.make_batches(3, -(-records // ingest.EVENTS_PER_BATCH), gzip=False)
    for body in bodies:
        for endpoint_id, item in orjson.loads(body)["BatchItem"].items():
            endpoints[endpoint_id] = orjson.dumps(item["Endpoint"])
            for event_id, event in item["Events"].items():
                rows.append(
                    StreamRow(len(rows) + 1, endpoint_id, event_id, 1_700_000_000_000,
                              orjson.dumps(event))
                )  # fmt: skip
    return rows[:records], endpoints


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=40_000, help="records a pass")
    parser.add_argument("--passes", type=int, default=5, help="passes; the best is shown")
    args = parser.parse_args()
    rows, endpoints = _rows(args.records)
    batches = [rows[i : i + BATCH_EVENTS] for i in range(0, len(rows), BATCH_EVENTS)]
    app_id = "a" * 32

    def by_line(rows: list[StreamRow], bodies: dict[str, bytes]) -> bytes | None:
        parsed = {key: orjson.loads(body) for key, body in bodies.items()}
        line = Records(app_id).line
        lines = [
            line(r.endpoint_id, r.event_id, orjson.loads(r.body), parsed.get(r.endpoint_id),
                 r.arrival_ms)
            for r in rows
        ]  # fmt: skip
        return ndjson_gzip_lines(b"".join(lines)).content

    figures = {}
    for name, build in (("make_batch", make_batch(app_id)), ("peer, by Records.line", by_line)):
        best, size = float("inf"), 0
        for _ in range(args.passes):
            started = time.process_time()
            made = [build(batch, {r.endpoint_id: endpoints[r.endpoint_id] for r in batch})
                    for batch in batches]  # fmt: skip
            best = min(best, time.process_time() - started)
            size = sum(len(body or b"") for body in made)
        figures[name] = (best, size)
    print(f"{len(rows):,} records in batches of {BATCH_EVENTS:,}, best of {args.passes} passes:")
    for name, (best, size) in figures.items():
        print(
            f"  {name}: {1e6 * best / len(rows):.1f} us of CPU a record,"
            f" {size / len(rows):.0f} gzip bytes a record"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
