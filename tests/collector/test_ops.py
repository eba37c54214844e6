from __future__ import annotations

import re

import httpx

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
