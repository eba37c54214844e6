"""What matching costs in the campaign engine, each beside decoding the same JSON (the
collector decodes every event it stores and every endpoint a campaign run reads):

- one event against 25 active event-triggered campaigns. The 25 filters are spread over
  10 event types, with attribute and metric dimensions, plus one that takes any event
  type but one (EXCLUSIVE), which every event must meet. The events are a mix of types
  with and without candidate filters, as an app sends them;
- one stored endpoint against a segment of four dimensions (platform, an attribute, a
  metric and recency), the work of resolving a standard campaign's segment.

    python bench/campaign_match.py [--events 200000]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import orjson

from homing_collector.campaigns.event_filter import FilterIndex, compile_filter
from homing_collector.campaigns.segments import compile_segment
from homing_collector.campaigns.shapes import CampaignEventFilter, SegmentDimensions

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def _filters() -> FilterIndex:
    compiled = []
    for i in range(24):
        dimensions: dict[str, Any] = {"EventType": {"Values": [f"type{i % 10}"]}}
        if i % 3 == 0:
            dimensions["Attributes"] = {"plan": {"AttributeType": "CONTAINS", "Values": ["pro"]}}
        if i % 4 == 0:
            dimensions["Metrics"] = {"amount": {"ComparisonOperator": "GREATER_THAN", "Value": 10}}
        raw = {"FilterType": "ENDPOINT", "Dimensions": dimensions}
        compiled.append(compile_filter(f"c{i}", msgspec.convert(raw, CampaignEventFilter)))
    other = {
        "FilterType": "ENDPOINT",
        "Dimensions": {
            "EventType": {"DimensionType": "EXCLUSIVE", "Values": ["_session.start"]},
            "Attributes": {"store": {"Values": ["kiosk"]}},
        },
    }
    compiled.append(compile_filter("c24", msgspec.convert(other, CampaignEventFilter)))
    return FilterIndex(compiled)


def _events(count: int) -> list[bytes]:
    rng = random.Random(7)
    kinds = [f"type{i}" for i in range(10)] + ["_session.start", "_session.stop", "View", "Tap"]
    out = []
    for i in range(count):
        event = {
            "EventType": rng.choice(kinds),
            "Timestamp": "2026-12-06T12:00:00.000Z",
            "Attributes": {"plan": rng.choice(["pro", "free"]), "store": "web", "screen": "home"},
            "Metrics": {"amount": rng.choice([5.0, 50.0])},
            "Session": {"Id": f"s{i % 50}", "StartTimestamp": "2026-12-06T11:58:00.000Z"},
            "AppVersionCode": "1.4.2",
            "SdkName": "homing-python",
        }
        out.append(orjson.dumps(event))
    return out


def _endpoints(count: int) -> list[bytes]:
    rng = random.Random(8)
    out = []
    for i in range(count):
        seen = NOW - timedelta(hours=rng.randrange(24 * 30))
        endpoint = {
            "ApplicationId": "b" * 32,
            "Id": f"endpoint-{i}",
            "CohortId": str(i % 100),
            "ChannelType": "GCM",
            "EndpointStatus": "ACTIVE",
            "OptOut": "NONE",
            "CreationDate": "2026-11-01T10:00:00.000Z",
            "EffectiveDate": seen.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "Demographic": {
                "Platform": rng.choice(["android", "ios", "linux"]),
                "AppVersion": "1.4.2",
                "Locale": "fr_FR",
                "Timezone": "Europe/Paris",
            },
            "Location": {"Country": "FR", "City": "Lyon"},
            "Attributes": {"plan": [rng.choice(["pro", "free"])], "interests": ["jazz"]},
            "Metrics": {"visits": float(rng.randrange(10))},
            "User": {"UserId": f"user-{i}"},
        }
        out.append(orjson.dumps(endpoint))
    return out


def _segment() -> Callable[[Any], bool]:
    raw = {
        "Demographic": {"Platform": {"Values": ["android", "ios"]}},
        "Attributes": {"plan": {"Values": ["pro"]}},
        "Metrics": {"visits": {"ComparisonOperator": "GREATER_THAN", "Value": 2}},
        "Behavior": {"Recency": {"Duration": "DAY_14", "RecencyType": "ACTIVE"}},
    }
    return compile_segment(msgspec.convert(raw, SegmentDimensions), now=NOW)


def _ns_each(work: Callable[[Any], object], items: list[Any]) -> float:
    start = time.perf_counter_ns()
    for item in items:
        work(item)
    return (time.perf_counter_ns() - start) / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args, _ = parser.parse_known_args()
    index = _filters()
    bodies = _events(args.events)
    events = [orjson.loads(b) for b in bodies]

    best_decode = best_match = float("inf")
    hits = 0
    for _ in range(3):  # best of three, alternating, so that noise hits both alike
        start = time.perf_counter_ns()
        for body in bodies:
            orjson.loads(body)
        best_decode = min(best_decode, (time.perf_counter_ns() - start) / len(bodies))
        start = time.perf_counter_ns()
        hits = 0
        for event in events:
            hits += len(index.match(event))
        best_match = min(best_match, (time.perf_counter_ns() - start) / len(events))
    print(f"{index.size} active event filters, {len(events):,} events, {hits:,} matches")
    print(f"match one event:            {best_match:7.0f} ns")
    print(f"orjson.loads the same event: {best_decode:7.0f} ns (peer)")
    print(f"matching costs {best_match / best_decode:.2f}x one JSON decode of the event")

    stored = _endpoints(max(1, args.events // 2))
    rows = [orjson.loads(b) for b in stored]
    member = _segment()
    members = sum(map(member, rows))
    decode_ns = member_ns = float("inf")
    for _ in range(3):  # best of three, alternating
        decode_ns = min(decode_ns, _ns_each(orjson.loads, stored))
        member_ns = min(member_ns, _ns_each(member, rows))
    print(f"\n{len(rows):,} stored endpoints, {members:,} in a four-dimension segment")
    print(f"segment membership of one endpoint: {member_ns:7.0f} ns")
    print(f"orjson.loads the same endpoint:     {decode_ns:7.0f} ns (peer)")
    print(f"membership costs {member_ns / decode_ns:.2f}x one JSON decode of the endpoint;")
    print(f"alone it would resolve {1e9 / member_ns:,.0f} endpoints a second on one core")


if __name__ == "__main__":
    main()
