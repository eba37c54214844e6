from __future__ import annotations

import os
import re
import struct
from typing import Any

import httpx
import pytest

from homing_collector.metrics import Board, Metrics
from tests.conftest import LiveCollector


def test_healthz(collector: LiveCollector) -> None:
    response = httpx.get(collector.url + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_metrics_count_requests_and_events(collector: LiveCollector) -> None:
    app = collector.create_app("metrics")
    headers = {"Authorization": f"Bearer {app.ingest.token}"}
    body = {"BatchItem": {"ep": {"Endpoint": {}, "Events": {
        "good": {"EventType": "x", "Timestamp": "2026-11-28T10:00:00Z"},
        "bad": {"EventType": "x"},
    }}}}  # fmt: skip
    before = httpx.get(collector.url + "/metrics").text
    assert httpx.post(f"{collector.url}/v1/apps/{app.id}/events", json=body, headers=headers)
    text = httpx.get(collector.url + "/metrics").text

    def value(text: str, pattern: str) -> float:
        match = re.search(re.escape(pattern) + r" ([0-9.e+]+)", text)
        return float(match.group(1)) if match else 0.0

    for pattern in (
        'homing_events_total{outcome="accepted"}',
        'homing_events_total{outcome="rejected"}',
    ):
        assert value(text, pattern) == value(before, pattern) + 1
    series = (
        'homing_requests_total{route="/v1/apps/{application_id}/events",method="POST",status="202"}'
    )
    assert value(text, series) >= 1
    assert (
        'homing_request_duration_seconds_bucket{route="/v1/apps/{application_id}/events",le="+Inf"}'
        in text
    )
    assert "# TYPE homing_request_duration_seconds histogram" in text


def test_openapi_describes_every_route(collector: LiveCollector) -> None:
    from homing_collector.routes import OPERATIONS

    document = httpx.get(collector.url + "/openapi.json").json()
    assert document["openapi"].startswith("3.")
    operations = {
        op["operationId"]: (method.upper(), path)
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    }
    for op in OPERATIONS:
        assert op.name in operations
        method, path = operations[op.name]
        assert method == op.method
        assert path == op.path.replace("_", "-")
    refs = re.findall(
        r'"#/components/schemas/(\w+)"', httpx.get(collector.url + "/openapi.json").text
    )
    assert set(refs) <= set(document["components"]["schemas"])


def test_access_log_is_structured(collector: LiveCollector) -> None:
    import json

    httpx.get(collector.url + "/healthz?probe=access-log")
    assert collector.log is not None
    lines = [
        line for line in collector.log.read_text().splitlines() if "homing_collector.access" in line
    ]
    entries = [json.loads(line[line.index("{") :]) for line in lines]
    entry = next(e for e in entries if e["path"] == "/healthz")
    assert entry["status"] == 200 and entry["method"] == "GET" and entry["route"] == "/healthz"
    assert entry["request_id"] and entry["duration_ms"] >= 0


def _series(text: str) -> dict[str, float]:
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name and not name.startswith("#")
    }


def test_metrics_add_up_the_workers_of_a_board() -> None:
    board = Board(3)
    first, second, third = Metrics(), Metrics(), Metrics()
    for slot, metrics in enumerate((first, second, third)):
        metrics.share(board, slot)
    first.observe("/v1/apps", "GET", 200, 0.002, body_bytes=10)
    first.events["accepted"] += 5
    first.push_streams = 2
    # The second worker lives in another process, as `serve --workers` forks them.
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child leaves at once
        second.observe("/v1/apps", "GET", 200, 0.3)
        second.observe("/v1/apps", "GET", 404, 0.001, body_bytes=5)
        second.events["accepted"] += 7
        second.events["rejected"] += 1
        second.push["sent"] += 4
        second.push_streams = 3
        second.publish()
        os._exit(0)
    os.waitpid(pid, 0)
    # The second worker has exited: its counts stay, its open streams do not.
    series = _series(first.render())
    assert series['homing_requests_total{route="/v1/apps",method="GET",status="200"}'] == 2
    assert series['homing_requests_total{route="/v1/apps",method="GET",status="404"}'] == 1
    assert series['homing_events_total{outcome="accepted"}'] == 12
    assert series['homing_request_body_bytes_total{route="/v1/apps"}'] == 15
    assert series['homing_events_total{outcome="rejected"}'] == 1
    assert series['homing_push_messages_total{outcome="sent"}'] == 4
    assert series["homing_push_streams"] == 2
    buckets = 'homing_request_duration_seconds_bucket{route="/v1/apps",le="%s"}'
    assert series[buckets % "0.0025"] == 2
    assert series[buckets % "0.5"] == 3
    assert series['homing_request_duration_seconds_count{route="/v1/apps"}'] == 3
    # A live worker's streams count; a worker that never published adds nothing.
    third.push_streams = 1
    third.publish()
    assert _series(first.render())["homing_push_streams"] == 3
    # A scrape publishes what it counted: a later scrape that another worker answers never
    # counts less, which Prometheus would take for a restart.
    first.events["accepted"] += 1
    assert _series(first.render())['homing_events_total{outcome="accepted"}'] == 13
    assert _series(third.render())['homing_events_total{outcome="accepted"}'] == 13
    # A worker stopped in the middle of writing its slot: what it wrote before still counts.
    sequence, length = struct.unpack_from("<QQ", board._map, Board.SLOT_BYTES)
    struct.pack_into("<QQ", board._map, Board.SLOT_BYTES, sequence + 1, length)
    assert _series(first.render())['homing_events_total{outcome="accepted"}'] == 13


def test_board_skips_a_slot_mid_write_and_a_snapshot_too_big(
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = Board(2)
    assert board.read(1) is None  # nothing published yet
    assert board.write(1, {"n": 1})
    assert board.read(1) == {"n": 1}
    # A writer stopped half-way leaves an odd sequence number: readers give up on it.
    sequence, length = struct.unpack_from("<QQ", board._map, Board.SLOT_BYTES)
    struct.pack_into("<QQ", board._map, Board.SLOT_BYTES, sequence + 1, length)
    assert board.read(1) is None
    # Counts too big for a slot are left out, and said so once.
    metrics = Metrics()
    metrics.share(board, 0)
    for n in range(Board.SLOT_BYTES // 20):
        metrics.requests[(f"/route/{n}", "GET", 200)] += 1
    metrics.publish()
    metrics.publish()
    assert board.read(0) is None
    assert [r.message for r in caplog.records if "no longer fit" in r.message] == [
        f"metrics: this worker's counts no longer fit in {Board.SLOT_BYTES} bytes; the other"
        " workers' /metrics leave them out"
    ]


def test_histogram_counts_stay_exact_past_a_million() -> None:
    metrics = Metrics()
    for _ in range(1_234_567):
        metrics.observe("/healthz", "GET", 200, 0.001)
    text = metrics.render()
    assert 'homing_requests_total{route="/healthz",method="GET",status="200"} 1234567' in text
    assert 'homing_request_duration_seconds_count{route="/healthz"} 1234567\n' in text
    assert 'homing_request_duration_seconds_bucket{route="/healthz",le="+Inf"} 1234567\n' in text


def test_openapi_bounds_come_from_the_validators_constants(collector: LiveCollector) -> None:
    from homing import limits
    from homing_collector.models.apps import MAX_APP_NAME_LENGTH
    from homing_collector.push.messages import MAX_ACKS, MAX_TARGETS, MAX_TTL_SECONDS

    schemas = httpx.get(collector.url + "/openapi.json").json()["components"]["schemas"]

    def prop(name: str, field: str) -> Any:
        schema = schemas[name]["properties"][field]
        return next(s for s in schema.get("anyOf", [schema]) if s != {"type": "null"})

    assert prop("EndpointRequest", "Address")["maxLength"] == limits.MAX_PLAIN_STRING_LENGTH
    assert prop("Session", "Duration")["minimum"] == 0
    assert prop("Session", "Id")["maxLength"] == limits.MAX_ID_LENGTH
    assert prop("Event", "EventType")["maxLength"] == limits.MAX_EVENT_TYPE_LENGTH
    assert prop("CreateApplicationRequest", "Name")["maxLength"] == MAX_APP_NAME_LENGTH
    assert prop("EndpointBatchRequest", "Item")["maxItems"] == limits.MAX_ENDPOINTS_PER_BATCH
    assert prop("EventsRequest", "BatchItem")["maxProperties"] == limits.MAX_ENDPOINTS_PER_BATCH
    assert prop("PushAcksRequest", "MessageIds")["maxItems"] == MAX_ACKS
    assert prop("MessageRequest", "Endpoints")["maxProperties"] == MAX_TARGETS
    assert prop("ChannelPushMessage", "TimeToLive")["maximum"] == MAX_TTL_SECONDS
    user_id = prop("EndpointUser", "UserId")
    assert user_id["minLength"] == 1
    pattern = re.compile(user_id["pattern"])
    assert pattern.search("user 42 \u00e9") and not pattern.search("a/b")
    assert not pattern.search("a\nb") and not pattern.search("a\n")
