"""Event-triggered campaigns on a live collector: how long from PutEvents' 202 to the
push reaching a connected device, and what 25 active event campaigns cost PutEvents.

Starts ``homing-collector serve`` on loopback with a fresh SQLite file and two
applications: one with 25 event-triggered campaigns (each on its own event type, with an
attribute and a metric dimension), one with none.

- latency: a device holds its push stream open; one event at a time triggers one of the
  campaigns, and the time from the 202 to the push read on the stream is noted. Printed
  beside the PutEvents round trip itself.
- throughput: client threads send batches of 100 events (a mix of types, a third of them
  the campaigns' types with attributes that do not match) to each application in turn;
  events stored per second with the 25 campaigns, beside the same with none.

    python bench/campaign_triggers.py [--events 300] [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import serve

CAMPAIGNS = 25


def cli(db: Path, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "homing_collector", "--db", str(db), *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(kind: str, sku: str) -> dict[str, Any]:
    return {"EventType": kind, "Timestamp": now(), "Attributes": {"sku": sku},
            "Metrics": {"amount": 9.5}}  # fmt: skip


def setup(client: httpx.Client, app_id: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    base = f"/v1/apps/{app_id}"
    segment = {"Dimensions": {"Demographic": {"Platform": {"Values": ["android"]}}}}
    response = client.post(base + "/segments", json=segment, headers=headers)
    segment_id = response.json()["Id"]
    for i in range(CAMPAIGNS):
        dimensions = {
            "EventType": {"Values": [f"trigger{i}"]},
            "Attributes": {"sku": {"Values": ["A-1"]}},
            "Metrics": {"amount": {"ComparisonOperator": "GREATER_THAN", "Value": 5}},
        }
        campaign = {
            "Name": f"c{i}",
            "SegmentId": segment_id,
            "Schedule": {"StartTime": "IMMEDIATE", "Frequency": "EVENT",
                         "EventFilter": {"FilterType": "ENDPOINT", "Dimensions": dimensions}},
            "MessageConfiguration": {"DefaultMessage": {"Title": "Hi", "Body": "{{Id}}"}},
        }  # fmt: skip
        response = client.post(base + "/campaigns", json=campaign, headers=headers)
        assert response.status_code == 201, response.text


def latency(client: httpx.Client, app: dict[str, Any], url: str, count: int) -> None:
    app_id, ingest = app["application_id"], app["ingest"]["token"]
    headers = {"Authorization": f"Bearer {ingest}"}
    device = {"BatchItem": {"device-1": {
        "Endpoint": {"ChannelType": "GCM", "Demographic": {"Platform": "android"}},
        "Events": {"setup": event("app.open", "none")}}}}  # fmt: skip
    client.post(f"/v1/apps/{app_id}/events", json=device, headers=headers)
    arrivals: queue.Queue[float] = queue.Queue()
    stop = threading.Event()
    stream = f"{url}/v1/apps/{app_id}/endpoints/device-1/stream"
    reader = threading.Thread(
        target=_read_stream, args=(stream, headers, arrivals, stop), daemon=True
    )
    reader.start()
    time.sleep(0.5)
    trips, waits = [], []
    for n in range(count):
        body = {"BatchItem": {"device-1": {"Endpoint": {}, "Events": {
            str(uuid.uuid4()): event(f"trigger{n % CAMPAIGNS}", "A-1")}}}}  # fmt: skip
        sent = time.perf_counter()
        response = client.post(f"/v1/apps/{app_id}/events", content=orjson.dumps(body),
                               headers=headers)  # fmt: skip
        answered = time.perf_counter()
        assert response.status_code == 202, response.text
        arrived = arrivals.get(timeout=10)
        trips.append(answered - sent)
        waits.append(max(0.0, arrived - answered))
    stop.set()
    print(f"PutEvents round trip (peer): p50 {_ms(trips, 0.5)}  p99 {_ms(trips, 0.99)}")
    print(f"202 to push on the stream:   p50 {_ms(waits, 0.5)}  p99 {_ms(waits, 0.99)}"
          f"  ({count} events, {CAMPAIGNS} event campaigns)")  # fmt: skip


def _read_stream(
    url: str, headers: dict[str, str], arrivals: queue.Queue[float], stop: threading.Event
) -> None:
    with (
        httpx.Client(timeout=None, headers=headers) as client,
        client.stream("GET", url) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("event: push"):
                arrivals.put(time.perf_counter())
            if stop.is_set():
                return


def _ms(values: list[float], share: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000:6.1f} ms"


def _batch(serial: int) -> bytes:
    kinds = ["app.open", "view", "tap", "_session.start", "purchase", "search"]
    items = {}
    for e in range(100):
        kind = f"trigger{e % CAMPAIGNS}" if e % 3 == 0 else kinds[e % len(kinds)]
        items[f"load-{serial}-{e}"] = {"Endpoint": {}, "Events": {
            str(uuid.uuid4()): event(kind, "no-match")}}  # fmt: skip
    return orjson.dumps({"BatchItem": items})


def throughput(url: str, app: dict[str, Any], seconds: float, clients: int = 4) -> float:
    app_id, token = app["application_id"], app["ingest"]["token"]
    stored = [0] * clients
    deadline = time.perf_counter() + seconds

    def load(index: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            serial = index * 1_000_000
            while time.perf_counter() < deadline:
                serial += 1
                response = c.post(f"/v1/apps/{app_id}/events", content=_batch(serial))
                if response.status_code == 202:
                    stored[index] += 100

    threads = [threading.Thread(target=load, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(stored) / (time.perf_counter() - started)


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        with_campaigns = cli(db, "apps", "create", "with", "--json")
        without = cli(db, "apps", "create", "without", "--json")
        server, url = serve.start(db, Path(tmp) / "collector.log")
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                setup(client, with_campaigns["application_id"], with_campaigns["admin"]["token"])
                time.sleep(1)  # the filters reach the server's process within a second
                latency(client, with_campaigns, url, args.events)
            rates: dict[str, list[float]] = {"with": [], "without": []}
            for _ in range(2):  # alternated, so that a slow moment hurts both
                rates["without"].append(throughput(url, without, args.seconds))
                rates["with"].append(throughput(url, with_campaigns, args.seconds))
        finally:
            serve.stop(server)
    none, some = statistics.mean(rates["without"]), statistics.mean(rates["with"])
    print(f"PutEvents, no event campaign (peer):  {none:8,.0f} events/s")
    print(f"PutEvents, {CAMPAIGNS} event campaigns:     {some:8,.0f} events/s"
          f"  ({some / none:.0%} of the peer)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=4.0)
    main(parser.parse_args())
