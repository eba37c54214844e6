"""SIGTERM and SIGINT stop the collector gracefully.

It stops listening at once, lets the requests in flight finish, commits what it
acknowledged, and exits 0.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.collector.traffic import Key, Traffic, new_batch, stored_events
from tests.conftest import LiveCollector

# The tests here start their own collectors, on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_backends

SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]


class HeldRequest:
    """A PutEvents request that stays in flight until `finish()` sends the rest of its body."""

    def __init__(self, url: str, app_id: str, token: str) -> None:
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1" and parts.port is not None
        self.port = parts.port
        body, self.keys = new_batch(["held-endpoint"], 100, serial=0)
        self.body = orjson.dumps(body)
        self.head = (
            f"POST /v1/apps/{app_id}/events HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\n"
            "Expect: 100-continue\r\n\r\n"
        ).encode()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def start(self) -> None:
        """Send the headers and wait for `100 Continue`: the app is now reading the body."""
        self.sock.sendall(self.head)
        interim = self._read_until(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100"), interim
        self.sock.sendall(self.body[: len(self.body) // 2])

    def finish(self) -> tuple[int, dict[str, str], Any]:
        """Send the rest of the body; read the answer up to the end of the connection."""
        self.sock.sendall(self.body[len(self.body) // 2 :])
        data = self._read_until(None)
        head, _, payload = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers, orjson.loads(payload)

    def close(self) -> None:
        self.sock.close()

    def _read_until(self, marker: bytes | None) -> bytes:
        data = b""
        for _ in range(10_000):  # recv blocks at most the socket timeout each time
            if marker is not None and marker in data:
                return data
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        raise AssertionError(f"no end to the answer: {data[:200]!r}")


def wait_until_refused(port: int, timeout: float) -> None:
    """Poll until nothing listens on `port` any more (there is no event to wait on)."""
    give_up = time.monotonic() + timeout
    for _ in range(2_000):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        except (ConnectionRefusedError, ConnectionResetError):
            # Reset: the listening socket closed with this connection still in its backlog.
            return
        if time.monotonic() > give_up:
            break
        time.sleep(0.01)
    raise AssertionError(f"127.0.0.1:{port} still accepts connections {timeout} s after the signal")


@pytest.mark.parametrize("sig", SIGNALS)
def test_signal_finishes_requests_in_flight_and_keeps_every_acknowledged_event(
    start_collector: Callable[..., LiveCollector], sig: int
) -> None:
    live = start_collector()
    assert live.process is not None
    app = live.create_app("shutdown")
    traffic = Traffic(live.url, app.id, app.ingest.token, clients=8)
    held = HeldRequest(live.url, app.id, app.ingest.token)
    try:
        held.start()
        with traffic.running():
            assert traffic.wait_for(100, timeout=60), traffic.summary()
            live.process.send_signal(sig)  # batches are in flight from 8 clients
            wait_until_refused(held.port, timeout=15)
            # Every client ends on a closed connection or a refused one.
            assert traffic.wait_until_stopped(timeout=30), traffic.summary()
        # A request is still in flight, so the collector must not exit, however long it takes.
        with pytest.raises(subprocess.TimeoutExpired):
            live.process.wait(timeout=1.0)
        status, headers, answer = held.finish()
    finally:
        held.close()
    code = live.process.wait(timeout=20)

    assert traffic.unexpected == [], traffic.summary()
    assert len(traffic.transport_errors) == traffic.clients, traffic.summary()
    assert status == 202, answer
    assert headers["content-type"] == "application/json", headers
    statuses = answer["Results"]["held-endpoint"]["EventsItemResponse"]
    assert {event_id: s["StatusCode"] for event_id, s in statuses.items()} == {
        event_id: 202 for _, event_id in held.keys
    }
    assert code == 0, f"exit code {code}"
    with pytest.raises(httpx.ConnectError):
        httpx.get(live.url + "/healthz", timeout=5)

    acknowledged: set[Key] = traffic.acknowledged | set(held.keys)
    stored = stored_events(live, app.id)
    missing = acknowledged - stored.keys()
    assert not missing, (
        f"{len(missing)} of {len(acknowledged)} acknowledged events are not in the database, "
        f"e.g. {sorted(missing)[:3]}"
    )
    assert set(stored.values()) == {1}, "an event is stored more than once"


@pytest.mark.parametrize("sig", SIGNALS)
def test_signal_exits_0(start_collector: Callable[..., LiveCollector], sig: int) -> None:
    live = start_collector()
    assert live.process is not None and live.log is not None
    # Once it has answered, uvicorn's signal handlers are in place.
    assert httpx.get(live.url + "/healthz", timeout=10).status_code == 200
    live.process.send_signal(sig)
    code = live.process.wait(timeout=20)
    assert "Traceback" not in live.log.read_text()
    assert code == 0


@pytest.mark.parametrize("sig", SIGNALS)
def test_signal_right_after_the_banner_is_graceful(
    start_collector: Callable[..., LiveCollector], sig: int
) -> None:
    # The "listening on" line comes once the app is up, so a supervisor may stop the
    # server the moment it sees it.
    live = start_collector()
    assert live.process is not None and live.log is not None
    live.process.send_signal(sig)
    assert live.process.wait(timeout=20) == 0
    assert "Traceback" not in live.log.read_text()
