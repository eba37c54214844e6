"""A standard campaign to a large segment: endpoints resolved and queued per second,
beside a ceiling measured in the same run on the same database.

- campaign: an IMMEDIATE campaign to a segment holding every endpoint (a demographic and
  a metric dimension), run by the collector's scheduler: the segment walk, treatments
  and holdout, message variables, one send record, push and `_campaign.send` event per
  endpoint, committed a chunk at a time;
- ceiling: the least the same result needs through the same storage: reading every
  endpoint a chunk at a time and queuing one ready-made push for each, with no
  decisions, no send records and no events.

With --custom the campaign goes to a custom channel instead: its calls, 50 endpoints
each, are queued in the outbox with the send records (no outbox worker runs, so none is
made).

    python bench/campaigns.py [--endpoints 100000] [--custom]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path

import orjson

from homing_collector.campaigns.scheduler import CHUNK, Scheduler
from homing_collector.endpoints import merge
from homing_collector.metrics import Metrics
from homing_collector.push.gateway import Gateway
from homing_collector.storage.base import (
    AppRecord,
    CampaignRecord,
    EndpointUpdate,
    PushMessage,
    SegmentRecord,
)
from homing_collector.storage.sqlite import SQLiteStorage

STAMP = "2026-12-07T00:00:00.000Z"
SEGMENT = {
    "Dimensions": {
        "Demographic": {"Platform": {"Values": ["android", "ios"]}},
        "Metrics": {"visits": {"ComparisonOperator": "GREATER_THAN_OR_EQUAL", "Value": 0}},
    }
}
CAMPAIGN = {
    "SegmentId": "everyone",
    "Schedule": {"StartTime": "IMMEDIATE", "Frequency": "ONCE"},
    "HoldoutPercent": 5,
    "AdditionalTreatments": [{"SizePercent": 45, "MessageConfiguration": {
        "DefaultMessage": {"Title": "B for {{User.UserAttributes.FirstName}}", "Body": "b"}}}],
    "MessageConfiguration": {
        "DefaultMessage": {"Title": "Hi {{User.UserAttributes.FirstName}}", "Body": "Sale"}
    },
}  # fmt: skip
CUSTOM = {
    **CAMPAIGN,
    "CustomDeliveryConfiguration": {"DeliveryUri": "http://127.0.0.1:9/hook",
                                    "EndpointTypes": ["GCM"]},
    "MessageConfiguration": {"CustomMessage": {"Data": "{\"kind\": \"sale\"}"}},
    "AdditionalTreatments": [{"SizePercent": 45, "MessageConfiguration": {
        "CustomMessage": {"Data": "{\"kind\": \"b\"}"}}}],
}  # fmt: skip


async def fill(storage: SQLiteStorage, app_id: str, count: int) -> None:
    for start in range(0, count, 1000):
        updates = [
            EndpointUpdate(f"device-{i:07d}", {
                "ChannelType": "GCM",
                "Demographic": {"Platform": "android" if i % 3 else "ios"},
                "Metrics": {"visits": float(i % 17)},
                "User": {"UserId": f"user-{i}", "UserAttributes": {"FirstName": [f"Ada{i}"]}},
            })
            for i in range(start, min(count, start + 1000))
        ]  # fmt: skip
        await storage.update_endpoints(
            app_id, updates, merge=partial(merge, app_id, now=STAMP), max_user_endpoints=15
        )


async def campaign(
    storage: SQLiteStorage, gateway: Gateway, app_id: str, request: dict[str, object]
) -> tuple[float, int]:
    await storage.create_segment(
        SegmentRecord(app_id, "everyone", 1, STAMP, STAMP, orjson.dumps(SEGMENT).decode()), []
    )
    record = CampaignRecord(app_id, "c1", 1, STAMP, STAMP, orjson.dumps(request).decode(),
                            "everyone", "SCHEDULED")  # fmt: skip
    await storage.create_campaign(record, None)
    scheduler = Scheduler(storage, gateway)
    started = time.perf_counter()
    await scheduler.run_once()
    elapsed = time.perf_counter() - started
    [activity] = await storage.list_activities(app_id, "c1", after=0, limit=1)
    assert activity.state == "COMPLETED", activity
    return elapsed, sum(activity.metrics.values())


async def ceiling(storage: SQLiteStorage, app_id: str, expires_at: int) -> tuple[float, int]:
    payload = orjson.dumps({"Data": {"pinpoint.notification.title": "Hi"}}).decode()
    started = time.perf_counter()
    after, seen = None, 0
    while True:
        rows = await storage.endpoints_after(app_id, after=after, limit=CHUNK)
        messages = [
            PushMessage(endpoint_id, str(uuid.uuid4()), False, payload, "ceiling", expires_at)
            for endpoint_id, _ in rows
        ]
        if messages:
            await storage.queue_push(app_id, messages, queue_limit=100)
        seen += len(rows)
        if len(rows) < CHUNK:
            return time.perf_counter() - started, seen
        after = rows[-1][0]


async def main(count: int, custom: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # Tuned as `serve` is: SQLite's defaults, synchronous NORMAL.
        storage = SQLiteStorage(Path(tmp) / "bench.db")
        await storage.start()
        try:
            await storage.create_app(AppRecord("bench", "bench", STAMP))
            await storage.create_app(AppRecord("ceiling", "ceiling", STAMP))
            started = time.perf_counter()
            await fill(storage, "bench", count)
            await fill(storage, "ceiling", count)
            print(f"setup: {2 * count:,} endpoints in {time.perf_counter() - started:.1f} s")
            gateway = Gateway(storage, Metrics(), heartbeat=20, queue_limit=100,
                              default_ttl=3600, shared=False)  # fmt: skip
            floor_s, floor_n = await ceiling(storage, "ceiling", int(time.time() * 1000) + 3600_000)
            run_s, run_n = await campaign(storage, gateway, "bench", CUSTOM if custom else CAMPAIGN)
            calls = sum(count for _, count, _ in (await storage.hook_gauges())["pending"])
        finally:
            await storage.close()
    assert run_n == floor_n == count, (run_n, floor_n)
    print(f"ceiling (read endpoints, queue pushes): {floor_n / floor_s:10,.0f} endpoints/s")
    rate = run_n / run_s
    kind = "custom-channel" if custom else "standard"
    print(f"{kind} campaign (resolved and queued): {rate:9,.0f} endpoints/s")
    print(f"  {run_s:.1f} s for {run_n:,} endpoints; {run_s / floor_s:.1f}x the ceiling's time")
    if custom:
        assert calls > 0
        print(f"  {calls:,} custom-channel calls queued in the outbox")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=100_000)
    parser.add_argument("--custom", action="store_true", help="run a custom-channel campaign")
    args = parser.parse_args()
    asyncio.run(main(args.endpoints, args.custom))
