"""serve --workers N: several processes on one port and one database file."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx

from tests.collector.traffic import Traffic, stored_events
from tests.conftest import LiveCollector


def test_workers_share_the_load_and_stop_cleanly(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector(None, "--workers", "2")
    app = live.create_app("workers")
    assert live.process is not None
    traffic = Traffic(live.url, app.id, app.ingest.token, clients=8)
    with traffic.running():
        assert traffic.wait_for(200, timeout=60), traffic.summary()
        live.process.send_signal(signal.SIGTERM)
        assert live.process.wait(timeout=30) == 0
        assert traffic.wait_until_stopped(timeout=30), traffic.summary()
    assert traffic.unexpected == [], traffic.summary()
    stored = stored_events(live.db, app.id)
    missing = traffic.acknowledged - stored.keys()
    assert not missing, f"{len(missing)} acknowledged events were lost"
    assert set(stored.values()) == {1}
    assert live.log is not None
    log = live.log.read_text()
    # Both workers started, and both shut down gracefully.
    assert log.count("Application startup complete") == 2
    assert log.count("Finished server process") == 2


def test_workers_answer_on_one_port(start_collector: Callable[..., LiveCollector]) -> None:
    live = start_collector(None, "--workers", "2")
    app = live.create_app("one-port")
    headers = {"Authorization": f"Bearer {app.admin.token}"}
    # Fresh connections are spread over the workers by the kernel; all of them answer.
    for _ in range(20):
        with httpx.Client(headers=headers) as client:
            assert client.get(f"{live.url}/v1/apps/{app.id}").status_code == 200


def test_workers_stop_when_their_supervisor_is_killed(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector(None, "--workers", "2")
    assert live.process is not None
    assert httpx.get(live.url + "/healthz", timeout=10).status_code == 200
    live.process.kill()
    assert live.process.wait(timeout=10) == -signal.SIGKILL
    # The workers get SIGTERM from the kernel and shut down: the port stops answering.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(live.url + "/healthz", timeout=1)
        except httpx.TransportError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("a worker outlived its killed supervisor")


def _metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_workers_metrics_count_every_worker(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector(None, "--workers", "2")
    app = live.create_app("metrics")
    events = {"BatchItem": {"ep-1": {"Endpoint": {}, "Events": {}}}}
    batch = events["BatchItem"]["ep-1"]["Events"]
    # Twenty requests, each on a connection of its own: the kernel spreads them over both
    # workers (all on one has a chance of one in half a million).
    for n in range(20):
        batch.clear()
        for i in range(3):
            batch[f"event-{n}-{i}"] = {"EventType": "tap", "Timestamp": "2026-11-28T10:00:00Z"}
        with httpx.Client(headers={"Authorization": f"Bearer {app.ingest.token}"}) as client:
            response = client.post(f"{live.url}/v1/apps/{app.id}/events", json=events)
        assert response.status_code == 202
    put_events = (
        'homing_requests_total{route="/v1/apps/{application_id}/events",method="POST",status="202"}'
    )
    # Every scrape, whichever worker answers it, counts both workers' requests once each
    # has published (every second).
    deadline = time.monotonic() + 15
    seen: list[tuple[float, float]] = []
    while time.monotonic() < deadline:
        scrapes = [httpx.get(live.url + "/metrics", timeout=10).text for _ in range(10)]
        seen = [
            (_metric(text, 'homing_events_total{outcome="accepted"}'), _metric(text, put_events))
            for text in scrapes
        ]
        if all(pair == (60, 20) for pair in seen):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"scrapes counted (events, requests) {seen}, not (60, 20) each")
