"""kill -9 at the worst moments: nothing recorded is lost, nothing is stored twice."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

import homing
from tests.conftest import LiveCollector
from tests.e2e.conftest import collector_events, free_port, spawn

RECORD_THEN_WAIT = """
import time
url, app_id, token, data_dir, n = sys.argv[1:6]
analytics = homing.Analytics(app_id, url, token, data_dir=data_dir, flush_interval=3600)
for i in range(int(n)):
    analytics.record_event("Durable", attributes={"i": str(i)})
print("recorded", flush=True)
time.sleep(600)
"""

RECORD_THEN_FLUSH = """
import time
url, app_id, token, data_dir, n = sys.argv[1:6]
analytics = homing.Analytics(app_id, url, token, data_dir=data_dir, flush_interval=3600)
for i in range(int(n)):
    analytics.record_event("Durable", attributes={"i": str(i)})
print("recorded", flush=True)
while True:
    analytics.flush(timeout=60)
    time.sleep(0.05)
"""


def deliver(url: str, app_id: str, token: str, data_dir: Path) -> homing.FlushResult:
    with homing.Analytics(app_id, url, token, data_dir=data_dir) as analytics:
        return analytics.flush(timeout=30)


def test_kill_9_while_offline_loses_nothing(tmp_path: Path) -> None:
    n = 500
    port = free_port()
    live = LiveCollector(tmp_path / "collector.db", extra_args=("--port", str(port)))
    app = live.create_app()
    url = f"http://127.0.0.1:{port}"
    child = spawn(RECORD_THEN_WAIT, url, app.id, app.ingest.token, str(tmp_path / "sdk"), str(n))
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line == "recorded\n", child.communicate()[1]
    child.send_signal(signal.SIGKILL)
    child.communicate()
    live.start()
    try:
        result = deliver(url, app.id, app.ingest.token, tmp_path / "sdk")
        held = collector_events(live, app.id)
    finally:
        live.stop()
    assert (result.sent, result.remaining) == (n, 0)
    assert len(held) == n
    assert len({event_id for event_id, _ in held}) == n


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True
    upstream = ""
    answered = 0
    answer_first = 1
    stalled: threading.Event
    release: threading.Event
    lock: threading.Lock


class _LosingHandler(BaseHTTPRequestHandler):
    """Forwards to the collector; after the first request, swallows the answers."""

    server: _Proxy

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {
            name: self.headers[name]
            for name in ("Authorization", "Content-Type", "Content-Encoding")
            if self.headers[name]
        }
        response = httpx.post(self.server.upstream + self.path, content=body, headers=headers)
        with self.server.lock:
            self.server.answered += 1
            lose = self.server.answered > self.server.answer_first
        if lose:
            # The collector stored the batch; the SDK never hears about it.
            self.server.stalled.set()
            self.server.release.wait(60)
            return
        self.send_response(response.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(response.content)))
        self.end_headers()
        self.wfile.write(response.content)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def losing_proxy() -> Iterator[Callable[[str], tuple[str, _Proxy]]]:
    servers: list[_Proxy] = []

    def start(upstream: str) -> tuple[str, _Proxy]:
        server = _Proxy(("127.0.0.1", 0), _LosingHandler)
        server.upstream = upstream
        server.stalled = threading.Event()
        server.release = threading.Event()
        server.lock = threading.Lock()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", server

    yield start
    for server in servers:
        server.release.set()
        server.shutdown()
        server.server_close()


def test_kill_9_in_the_middle_of_an_upload_loses_nothing_and_duplicates_nothing(
    collector: LiveCollector,
    tmp_path: Path,
    losing_proxy: Callable[[str], tuple[str, _Proxy]],
) -> None:
    n = 350
    app = collector.create_app("midupload")
    proxy_url, proxy = losing_proxy(collector.url)
    data_dir = str(tmp_path / "sdk")
    child = spawn(RECORD_THEN_FLUSH, proxy_url, app.id, app.ingest.token, data_dir, str(n))
    assert proxy.stalled.wait(30), child.communicate(timeout=5)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    before = collector_events(collector, app.id)
    assert 0 < len(before) < n  # the kill came mid-way: some batches are in, one unanswered

    result = deliver(collector.url, app.id, app.ingest.token, tmp_path / "sdk")
    held = collector_events(collector, app.id)
    assert result.remaining == 0
    # The unanswered batches went again (the first answer may not have been read either).
    assert n - proxy.answer_first * 100 <= result.sent <= n
    assert len(held) == n
    assert len({event_id for event_id, _ in held}) == n


EXIT_WITHOUT_CLOSE = """
url, app_id, token, data_dir, n = sys.argv[1:6]
analytics = homing.Analytics(app_id, url, token, data_dir=data_dir, flush_interval=3600,
                             shutdown_timeout=0.5)
for i in range(int(n)):
    analytics.record_event("AtExit")
print("recorded", flush=True)
"""


def test_the_exit_hook_makes_a_last_flush(collector: LiveCollector, tmp_path: Path) -> None:
    app = collector.create_app("atexit")
    child = spawn(EXIT_WITHOUT_CLOSE, collector.url, app.id, app.ingest.token,
                  str(tmp_path / "sdk"), "42")  # fmt: skip
    _, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert len(collector_events(collector, app.id)) == 42


def test_exit_is_bounded_while_the_collector_hangs(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # accepts (the kernel does) and never answers
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        started = time.monotonic()
        child = spawn(EXIT_WITHOUT_CLOSE, url, "app1", "hm_ingest_x", str(tmp_path / "sdk"), "5")
        assert child.stdout is not None
        assert child.stdout.readline() == "recorded\n"
        recorded = time.monotonic()
        child.communicate(timeout=30)
        assert time.monotonic() - recorded < 0.5 + 1.0
        assert child.returncode == 0
        assert time.monotonic() - started < 30
    finally:
        server.close()
    with homing.Analytics("app1", url, "hm_ingest_x", data_dir=tmp_path / "sdk",
                          shutdown_timeout=0.1) as analytics:  # fmt: skip
        assert analytics.stats().queued == 5  # kept on disk for the next launch
