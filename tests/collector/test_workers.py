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
