"""CPU of an event-triggered campaign's sends, in process: the trigger's send passes
(deciding each match, recording it, its `_campaign.send` event and its custom channel
calls, committed together) on a SQLite file, without HTTP or PutEvents.

A webhook campaign on a segment holding half of 4,000 endpoints is given passes of 200
to 259 matches (about half sent, half FILTERED_OUT_BY_SEGMENT), as
`bench/collector_cpu.py`'s campaign case gives it under load. The figure is the process's
CPU a match (the event loop's and the storage's writer thread's) and the event loop's
alone, for matches of random event ids (as SDKs make them) beside the same with event
ids that rise with time: a send record's key holds its event's id, after its endpoint's
(schema version 22). Before, with the event's id first and an index by endpoint beside,
a record of a random id dirtied two pages, and one of a rising id one.

    python bench/campaign_sends.py [--passes 40] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import orjson

from homing_collector.campaigns.scheduler import Scheduler
from homing_collector.campaigns.triggers import Match
from homing_collector.endpoints import merge
from homing_collector.metrics import Metrics
from homing_collector.push.gateway import Gateway
from homing_collector.storage.base import (
    AppRecord,
    CampaignRecord,
    EndpointUpdate,
    SegmentRecord,
)
from homing_collector.storage.sqlite import SQLiteStorage

APP = "app-1"
ENDPOINTS = 4000
PER_PASS = 200  # matches of a pass, plus up to 59 more


async def _setup(storage: SQLiteStorage) -> Scheduler:
    await storage.create_app(AppRecord(APP, "a", "2026-12-01T00:00:00Z"))
    updates = [
        EndpointUpdate(f"device-{i:05d}", {
            "ChannelType": "GCM" if i % 2 == 0 else "APNS", "Address": f"token-{i}",
            "Demographic": {"Platform": "android" if i % 2 == 0 else "ios"},
        })
        for i in range(ENDPOINTS)
    ]  # fmt: skip
    for start in range(0, ENDPOINTS, 100):
        await storage.update_endpoints(
            APP, updates[start : start + 100],
            merge=partial(merge, APP, now="2026-12-01T00:00:00Z"), max_user_endpoints=15,
        )  # fmt: skip
    stamp = (
        (datetime.now(timezone.utc) - timedelta(minutes=1))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    segment = {"Dimensions": {"Demographic": {"Platform": {"Values": ["android"]}}}}
    await storage.create_segment(
        SegmentRecord(APP, "android", 1, stamp, stamp, orjson.dumps(segment).decode()), []
    )
    body = {
        "SegmentId": "android",
        "Schedule": {
            "StartTime": "IMMEDIATE", "Frequency": "EVENT",
            "EventFilter": {"FilterType": "ENDPOINT",
                            "Dimensions": {"EventType": {"Values": ["purchase"]}}},
        },
        "CustomDeliveryConfiguration": {"DeliveryUri": "http://127.0.0.1:9/custom"},
        "MessageConfiguration": {"CustomMessage": {"Data": "Thanks for buying"}},
    }  # fmt: skip
    record = CampaignRecord(
        APP, "c1", 1, stamp, stamp, orjson.dumps(body).decode(), "android", "SCHEDULED"
    )
    await storage.create_campaign(record, None)
    gateway = Gateway(
        storage, Metrics(), heartbeat=20, queue_limit=100, default_ttl=3600, shared=False
    )
    scheduler = Scheduler(storage, gateway)
    await scheduler.plan()  # compiles the campaign's filter: the trigger knows it
    return scheduler


def _passes(count: int, *, ordered: bool) -> list[list[Match]]:
    found = []
    for n in range(count + 1):  # the first warms up, uncounted
        now = datetime.now(timezone.utc)
        found.append([
            Match(APP, "c1", f"device-{(n * PER_PASS + i) * 7 % ENDPOINTS:05d}",
                  f"{n:06d}{i:05d}" if ordered else uuid.uuid4().hex, now)
            for i in range(PER_PASS + n * 37 % 60)
        ])  # fmt: skip
    return found


async def _case(workdir: Path, passes: int, *, ordered: bool, round_: int) -> str:
    storage = SQLiteStorage(workdir / f"sends-{round_}-{ordered}.db")
    await storage.start()
    try:
        triggers = (await _setup(storage)).triggers
        first, *rest = _passes(passes, ordered=ordered)
        await triggers.send(first)
        process, thread = time.process_time(), time.thread_time()
        for matches in rest:
            await triggers.send(matches)
        process, thread = time.process_time() - process, time.thread_time() - thread
    finally:
        await storage.close()
    matches = sum(len(found) for found in rest)
    return (
        f"{'rising' if ordered else 'random'} event ids  {matches:,} matches  CPU us a match:"
        f" {1e6 * process / matches:5.1f}  (event loop {1e6 * thread / matches:4.1f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=40, help="send passes a case")
    parser.add_argument("--rounds", type=int, default=2, help="times each case runs, in turn")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="homing-sends-") as workdir:
        for round_ in range(args.rounds):
            for ordered in (False, True):
                line = asyncio.run(
                    _case(Path(workdir), args.passes, ordered=ordered, round_=round_)
                )
                print(f"round {round_}  {line}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
