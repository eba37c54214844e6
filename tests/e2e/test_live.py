"""The SDK against a real `homing-collector serve` on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

import homing
from tests.conftest import LiveCollector
from tests.e2e.conftest import collector_events, free_port


def test_offline_then_online(tmp_path: Path) -> None:
    port = free_port()
    live = LiveCollector(tmp_path / "collector.db", extra_args=("--port", str(port)))
    app = live.create_app()
    url = f"http://127.0.0.1:{port}"
    with homing.Analytics(app.id, url, app.ingest.token, data_dir=tmp_path / "sdk",
                          shutdown_timeout=0.5) as analytics:  # fmt: skip
        for i in range(150):
            analytics.record_event("Offline", attributes={"i": str(i)})
        result = analytics.flush(timeout=5)
        assert result.sent == 0 and result.remaining == 150
        assert result.error is not None and "ConnectError" in result.error
        assert analytics.stats().last_error
        live.start()
        try:
            # flush returns as soon as all is sent; the bound is for a busy machine, where
            # the collector's first PutEvents also starts its writer process.
            result = analytics.flush(timeout=30)
            # The background upload, its backoff over, may send some of them meanwhile:
            # flush waits for it, and sends the rest itself.
            assert (result.remaining, result.error) == (0, None)
            assert analytics.stats().sent == 150
            held = collector_events(live, app.id)
        finally:
            live.stop()
    assert len(held) == 150
    assert len({event_id for event_id, _ in held}) == 150


def test_per_event_400s_end_to_end(collector: LiveCollector, tmp_path: Path) -> None:
    app = collector.create_app("rejects")
    with homing.Analytics(app.id, collector.url, app.ingest.token,
                          data_dir=tmp_path / "sdk") as analytics:  # fmt: skip
        analytics.record_event("Good")
        # What an older SDK might have stored: the collector rejects it on its own.
        bad = {"EventType": "Bad", "Timestamp": "yesterday"}
        analytics._store.put("bad-event", orjson.dumps(bad))
        analytics.record_event("Also Good")
        result = analytics.flush(timeout=10)
        assert (result.sent, result.rejected, result.remaining) == (2, 1, 0)
        stats = analytics.stats()
        assert (stats.sent, stats.rejected) == (2, 1)
        assert stats.last_error is not None and "Timestamp" in stats.last_error
    held = sorted(kind for _, kind in collector_events(collector, app.id))
    assert held == ["Also Good", "Good"]


def test_a_wrong_key_keeps_the_events(collector: LiveCollector, tmp_path: Path) -> None:
    app = collector.create_app("wrongkey")
    with homing.Analytics(app.id, collector.url, "hm_ingest_wrong",
                          data_dir=tmp_path / "sdk") as analytics:  # fmt: skip
        analytics.record_event("e")
        result = analytics.flush(timeout=10)
        assert result.remaining == 1
        assert result.error is not None and result.error.startswith(("401", "403"))
    with homing.Analytics(app.id, collector.url, app.ingest.token,
                          data_dir=tmp_path / "sdk") as analytics:  # fmt: skip
        assert analytics.flush(timeout=10).sent == 1
    assert len(collector_events(collector, app.id)) == 1


def test_sessions_reach_the_collector(collector: LiveCollector, tmp_path: Path) -> None:
    app = collector.create_app("sessions")
    with homing.Analytics(app.id, collector.url, app.ingest.token,
                          data_dir=tmp_path / "sdk") as analytics:  # fmt: skip
        with analytics.session():
            analytics.record_event("Play")
        assert analytics.flush(timeout=10).sent == 3
    held = sorted(kind for _, kind in collector_events(collector, app.id))
    assert held == ["Play", "_session.start", "_session.stop"]


@pytest.fixture
def hanging_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize("timeout", [0.5, 2.0])
def test_close_is_bounded_while_the_collector_hangs(
    hanging_server: str, tmp_path: Path, timeout: float
) -> None:
    analytics = homing.Analytics("app1", hanging_server, "hm_ingest_x",
                                 data_dir=tmp_path / "sdk", shutdown_timeout=timeout,
                                 flush_interval=0.05)  # fmt: skip
    for _ in range(10):
        analytics.record_event("e")
    time.sleep(0.2)  # the uploader thread is now stuck in a request of its own
    started = time.monotonic()
    result = analytics.close()
    elapsed = time.monotonic() - started
    assert elapsed < timeout + 0.5
    assert result.remaining == 10
    reopened = homing.Analytics("app1", hanging_server, "hm_ingest_x", data_dir=tmp_path / "sdk",
                                shutdown_timeout=0.1)  # fmt: skip
    assert reopened.stats().queued == 10  # nothing lost: it stays on disk
    reopened.close()


def test_flush_timeout_is_bounded_while_the_collector_hangs(
    hanging_server: str, tmp_path: Path
) -> None:
    with homing.Analytics("app1", hanging_server, "hm_ingest_x", data_dir=tmp_path / "sdk",
                          shutdown_timeout=0.2) as analytics:  # fmt: skip
        analytics.record_event("e")
        started = time.monotonic()
        result = analytics.flush(timeout=1.0)
        assert time.monotonic() - started < 1.5
        assert result.remaining == 1 and result.error
