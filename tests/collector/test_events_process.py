"""The events writer process: PutEvents batches are written by a child of the collector.

It must never cost an acknowledged event, never outlive the collector, and never turn a
failure of its own into a 500.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from homing_collector.storage import events_process
from tests.collector.traffic import Traffic, acknowledged_keys, new_batch, stored_events
from tests.conftest import LiveCollector


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def child_running(live: LiveCollector, module: bytes) -> int:
    """The collector's one child that runs `module`."""
    assert live.process is not None
    (child,) = [
        child
        for child in children(live.process.pid)
        if module in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
    ]
    return child


def events_writer(live: LiveCollector) -> int:
    return child_running(live, b"homing_collector.storage.events_process")


def columnar_copier(live: LiveCollector) -> int:
    return child_running(live, b"homing_collector.storage.columnar_process")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")


def test_sigint_to_the_whole_process_group_is_graceful(tmp_path: Path) -> None:
    # Ctrl-C in a terminal, or a service manager, signals every process of the group:
    # the events writer must finish the batches in flight, not die with them.
    live = LiveCollector(tmp_path / "group.db", new_session=True).start()
    try:
        assert live.process is not None
        writer = events_writer(live)
        copier = columnar_copier(live)
        app = live.create_app("group")
        traffic = Traffic(live.url, app.id, app.ingest.token, clients=8)
        with traffic.running():
            assert traffic.wait_for(100, timeout=60), traffic.summary()
            os.killpg(live.process.pid, signal.SIGINT)
            assert traffic.wait_until_stopped(timeout=30), traffic.summary()
        assert live.process.wait(timeout=30) == 0
        assert wait_gone(writer, timeout=10), "the events writer outlived the collector"
        assert wait_gone(copier, timeout=10), "the columnar copy's process outlived it"
    finally:
        live.stop(signal.SIGKILL)  # only reaps it, if it exited as it should
    assert traffic.unexpected == [], traffic.summary()
    missing = traffic.acknowledged - stored_events(live.db, app.id).keys()
    assert not missing, f"{len(missing)} acknowledged events are not in the database"


def test_the_events_writer_dies_with_a_killed_collector(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector()
    writer = events_writer(live)
    copier = columnar_copier(live)
    assert live.process is not None
    live.process.kill()
    live.process.wait(timeout=10)
    assert wait_gone(writer, timeout=10), "the events writer outlived a SIGKILLed collector"
    assert wait_gone(copier, timeout=10), "the columnar copy's process outlived it"


@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["one", "workers"])
def test_a_dead_events_writer_costs_no_acknowledged_event_and_no_500(
    start_collector: Callable[..., LiveCollector], workers: tuple[str, ...]
) -> None:
    # Under serve --workers, the writer that every worker shares dies: each goes on alone.
    live = start_collector(None, *workers)
    app = live.create_app("writer-dies")
    writer = events_writer(live)
    traffic = Traffic(live.url, app.id, app.ingest.token, clients=8)
    with traffic.running():
        assert traffic.wait_for(50, timeout=60), traffic.summary()
        acknowledged_before = traffic.batches_acknowledged
        os.kill(writer, signal.SIGKILL)
        # Clients that get a 503 stop; the others go on, now written in-process.
        traffic.wait_for(acknowledged_before + 50, timeout=10)
    # The batches the writer took with it are answered 503 with Retry-After, never 500.
    for line in traffic.unexpected:
        assert ": 503 " in line, traffic.summary()
    assert traffic.transport_errors == [], traffic.summary()

    # The collector goes on writing, in-process, and keeps what it acknowledged.
    body, keys = new_batch(["after-the-writer"], 25, 0)
    response = httpx.post(
        f"{live.url}/v1/apps/{app.id}/events",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {app.ingest.token}"},
        timeout=30,
    )
    assert acknowledged_keys(response, keys) == keys, response.text
    stored = stored_events(live.db, app.id)
    missing = (traffic.acknowledged | set(keys)) - stored.keys()
    assert not missing, f"{len(missing)} acknowledged events are not in the database"
    assert set(stored.values()) == {1}


def _post(live: LiveCollector, app: Any, serial: int, timeout: float) -> list[Any]:
    """Post a batch on a connection of its own; the events it acknowledged."""
    body, keys = new_batch([f"fresh-{serial}"], 10, serial)
    response = httpx.post(
        f"{live.url}/v1/apps/{app.id}/events",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {app.ingest.token}"},
        timeout=timeout,
    )
    return acknowledged_keys(response, keys)


def _workers_and_writer(live: LiveCollector) -> tuple[list[int], int]:
    """The workers of serve --workers, and the one events writer they share: a child of
    their supervisor, not of a worker."""
    assert live.process is not None
    writer = events_writer(live)
    workers = [child for child in children(live.process.pid) if child != writer]
    for worker in workers:
        found = [
            child
            for child in children(worker)
            if b"homing_collector.storage.events_process"
            in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        ]
        assert found == [], f"worker {worker} has an events writer of its own"
    return workers, writer


def test_the_workers_of_serve_share_one_events_writer(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector(None, "--workers", "2")
    app = live.create_app("one-writer")
    workers, writer = _workers_and_writer(live)
    assert len(workers) == 2
    assert _post(live, app, 0, timeout=30)  # every worker's writer is up
    time.sleep(1.0)  # and idle: its rollups' entries folded, the database not held
    # With the writer stopped, no worker stores a batch, nor answers one: twelve requests,
    # each on a connection of its own, reach both workers (all on one: one in 2048).
    os.kill(writer, signal.SIGSTOP)
    answered: list[int] = []
    try:

        def post(serial: int) -> None:
            with contextlib.suppress(httpx.TimeoutException):
                _post(live, app, serial, timeout=2.0)
                answered.append(serial)

        posting = [threading.Thread(target=post, args=(n,)) for n in range(1, 13)]
        for thread in posting:
            thread.start()
        for thread in posting:
            thread.join(30)
    finally:
        os.kill(writer, signal.SIGCONT)
    assert answered == [], f"answered without the events writer: {answered}"
    # Those batches are stored once the writer goes on (the requests gave up, the writes
    # did not), and what comes next is answered as before.
    deadline = time.monotonic() + 30
    while len(stored_events(live.db, app.id)) < 13 * 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(stored_events(live.db, app.id)) == 13 * 10
    assert all(_post(live, app, n, timeout=30) for n in range(13, 20))
    assert live.stop(signal.SIGTERM) == 0
    assert wait_gone(writer, timeout=10), "the events writer outlived the workers"


def test_a_killed_worker_leaves_the_shared_events_writer_to_the_other(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector(None, "--workers", "2")
    app = live.create_app("worker-dies")
    workers, writer = _workers_and_writer(live)
    os.kill(workers[0], signal.SIGKILL)
    assert wait_gone(workers[0], timeout=10)
    # The other worker answers every connection now, through the same writer.
    acknowledged = [key for n in range(20) for key in _post(live, app, n, timeout=30)]
    assert len(acknowledged) == 20 * 10
    assert alive(writer)
    assert _workers_and_writer(live)[1] == writer
    missing = set(acknowledged) - stored_events(live.db, app.id).keys()
    assert not missing, f"{len(missing)} acknowledged events are not in the database"
    live.stop(signal.SIGTERM)  # 1: a worker failed
    assert wait_gone(writer, timeout=10), "the events writer outlived the workers"


def test_the_shared_events_writer_stops_with_a_killed_supervisor(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector(None, "--workers", "2")
    workers, writer = _workers_and_writer(live)
    assert live.process is not None
    live.process.kill()
    live.process.wait(timeout=10)
    # The workers get SIGTERM from the kernel and stop; the writer then has no one left.
    for pid in workers:
        assert wait_gone(pid, timeout=30), "a worker outlived its killed supervisor"
    assert wait_gone(writer, timeout=10), "the events writer outlived the workers"


@pytest.fixture
def writer_end() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the collector's end, the writer's end) of a socket pair."""
    collector, writer = socket.socketpair()
    with collector, writer:
        yield collector, writer


def _send_later(sock: socket.socket, delay: float, count: int) -> threading.Thread:
    def send() -> None:
        time.sleep(delay)
        with contextlib.suppress(OSError):  # the test is over (it failed): nobody reads
            sock.sendall(b"".join(events_process.frame((n, "batch")) for n in range(count)))

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_a_batch_that_finds_the_writer_idle_is_taken_at_once(
    writer_end: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    collector, writer = writer_end
    monkeypatch.setattr(events_process, "GATHER_WAIT", 5.0)
    first = _send_later(collector, 0.05, 1)  # the writer is blocked waiting by then
    later = _send_later(collector, 1.0, 1)
    started = time.monotonic()
    messages, eof = events_process.Links([writer]).read()
    assert [message for _, message in messages] == [(0, "batch")]
    assert not eof
    assert time.monotonic() - started < 0.9  # not held for the next one
    first.join()
    later.join()


def test_while_batches_keep_coming_the_writer_gathers_them(
    writer_end: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    collector, writer = writer_end
    monkeypatch.setattr(events_process, "GATHER_WAIT", 5.0)
    collector.sendall(events_process.frame((99, "waiting")))  # busy: one was waiting
    more = _send_later(collector, 0.05, events_process.GATHER - 1)
    after = _send_later(collector, 2.0, 1)
    started = time.monotonic()
    messages, _ = events_process.Links([writer]).read()
    assert len(messages) == events_process.GATHER  # gathered, and no more waited for
    assert time.monotonic() - started < 1.9
    more.join()
    after.join()


def test_the_writer_waits_no_longer_than_gather_wait(
    writer_end: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    collector, writer = writer_end
    monkeypatch.setattr(events_process, "GATHER_WAIT", 0.2)
    collector.sendall(events_process.frame((1, "waiting")))
    started = time.monotonic()
    messages, _ = events_process.Links([writer]).read()
    waited = time.monotonic() - started
    assert [message for _, message in messages] == [(1, "waiting")]
    assert 0.2 <= waited < 1.5


def test_batches_that_come_while_another_writer_holds_the_database_share_one_commit(
    tmp_path: Path,
    writer_end: tuple[socket.socket, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer took a batch and waits for the database (serve --workers: the other
    worker's events writer commits); the batches that come meanwhile go in its commit."""
    fcntl = pytest.importorskip("fcntl")
    from homing_collector.storage.sqlite import SQLiteStorage

    collector, writer = writer_end
    path = tmp_path / "events.db"
    setup = SQLiteStorage(path)
    setup.close_writer(setup.open_writer())  # the collector has migrated it
    storage = SQLiteStorage(path)
    conn = storage.open_writer(migrate_schema=False)
    commits: list[int] = []
    commit_jobs = storage.commit_jobs

    def counted(conn: Any, jobs: list[Any]) -> list[tuple[Any, bool]]:
        commits.append(len(jobs))
        return commit_jobs(conn, jobs)

    monkeypatch.setattr(storage, "commit_jobs", counted)
    monkeypatch.setattr(storage, "put_events_job", lambda name: lambda conn: name)
    other = os.open(f"{path}-writer.lock", os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)  # another writer holds the database
    serving = threading.Thread(
        target=events_process.serve, args=(events_process.Links([writer]), storage, conn)
    )
    serving.start()
    try:
        collector.sendall(events_process.frame((1, "first")))  # taken at once: it waits
        time.sleep(0.3)
        collector.sendall(events_process.frame((2, "second")) + events_process.frame((3, "third")))
        time.sleep(0.3)
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
    answers: list[Any] = []
    buffer = bytearray()
    collector.settimeout(10.0)
    while len(answers) < 3:
        buffer += collector.recv(4096)
        events_process._take_frames(buffer, answers, 3)
    collector.shutdown(socket.SHUT_WR)
    serving.join(10.0)
    storage.close_writer(conn)
    assert sorted(answers) == [(1, True, "first"), (2, True, "second"), (3, True, "third")]
    assert commits == [3]
