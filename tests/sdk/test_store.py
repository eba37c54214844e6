from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from homing._store import ROW_OVERHEAD, Store
from tests.sdk.conftest import FakeClock


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "events.sqlite3"


def fill(store: Store, n: int, size: int = 10, start: int = 0) -> None:
    for i in range(start, start + n):
        store.put(f"e{i}", b'"' + b"x" * size + b'"')


def test_rows_survive_a_reopen(db: Path) -> None:
    store = Store(db)
    fill(store, 3)
    store.close()
    reopened = Store(db)
    assert reopened.count() == 3
    assert [row.event_id for row in reopened.claim(10, 10**6)] == ["e0", "e1", "e2"]


def test_the_file_is_wal_with_synchronous_normal(db: Path) -> None:
    store = Store(db)
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_a_claimed_row_is_not_handed_out_again_until_its_lease_expires(
    db: Path, clock: FakeClock
) -> None:
    store = Store(db, clock=clock, lease=60)
    fill(store, 5)
    first = store.claim(3, 10**6)
    assert [r.event_id for r in first] == ["e0", "e1", "e2"]
    assert [r.event_id for r in store.claim(10, 10**6)] == ["e3", "e4"]
    assert store.claim(10, 10**6) == []
    clock.advance(61)
    assert len(store.claim(10, 10**6)) == 5


def test_release_and_delete(db: Path, clock: FakeClock) -> None:
    store = Store(db, clock=clock)
    fill(store, 4)
    rows = store.claim(4, 10**6)
    store.delete(rows[:2])
    store.release(rows[2:])
    assert [r.event_id for r in store.claim(10, 10**6)] == ["e2", "e3"]
    assert store.count() == 2


def test_a_claim_respects_the_byte_budget_but_always_takes_one(db: Path) -> None:
    store = Store(db)
    fill(store, 3, size=1000)
    assert len(store.claim(10, 2100)) == 2
    assert len(store.claim(10, 10)) == 1


def test_a_full_store_evicts_the_oldest_and_counts_them(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    row = 1000 + 2 + ROW_OVERHEAD
    store = Store(db, max_bytes=100 * row)
    with caplog.at_level(logging.WARNING, "homing"):
        fill(store, 150, size=1000)
        # put() alone lets the store overshoot by a quarter at most ...
        assert store.count() <= 125
        # ... the uploader thread's maintenance enforces the cap.
        store.maintain()
    assert store.count() <= 100
    assert store.dropped["storage_full"] == 150 - store.count()
    remaining = [r.event_id for r in store.claim(200, 10**9)]
    assert remaining[-1] == "e149"  # the newest are kept
    assert remaining == sorted(remaining, key=lambda e: int(e[1:]))
    assert "store is full" in caplog.text


def test_maintenance_checkpoints_the_wal(db: Path) -> None:
    store = Store(db)
    fill(store, 300, size=500)
    wal = Path(f"{db}-wal")
    assert wal.stat().st_size > 100_000  # no checkpoint on the recording path
    store.maintain()
    # A second writer restarts the WAL from its start once a checkpoint has completed.
    fill(store, 1)
    store.maintain()
    with sqlite3.connect(db) as conn:
        busy, log, checkpointed = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    conn.close()
    assert busy == 0 and log == checkpointed


def test_a_store_that_never_gets_maintenance_checkpoints_inline(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("homing._store._INLINE_CHECKPOINT", 50)
    store = Store(db)
    fill(store, 49)
    assert store._since_checkpoint == 49
    fill(store, 1)
    assert store._since_checkpoint == 0


def test_a_locked_store_is_never_moved_aside(db: Path) -> None:
    first = Store(db)
    first.put("e0", b"{}")
    first.close()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("PRAGMA locking_mode = EXCLUSIVE")
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        store = Store(db, busy_timeout=0.1)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.path is None  # in memory for this run
    assert not list(db.parent.glob("*.corrupt-*"))
    assert Store(db).count() == 1


def test_the_size_estimate_tracks_deletes(db: Path) -> None:
    store = Store(db)
    fill(store, 10)
    store.delete(store.claim(10, 10**6))
    assert store._approx == 0
    assert store._measure() == 0


def test_a_corrupt_file_is_moved_aside_and_a_fresh_store_started(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database, just garbage " * 200)
    with caplog.at_level(logging.WARNING, "homing"):
        store = Store(db)
    fill(store, 2)
    assert store.count() == 2
    assert [p.name for p in db.parent.glob("events.sqlite3.corrupt-*")]
    assert "unreadable" in caplog.text
    assert store.dropped["store_corrupt"] == 1


def test_a_store_that_cannot_be_created_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    store = Store(blocker / "sub" / "events.sqlite3")
    fill(store, 2)
    assert store.path is None
    assert store.count() == 2


def test_two_stores_on_one_file_never_hand_out_the_same_row(db: Path) -> None:
    first, second = Store(db), Store(db)
    fill(first, 500)
    taken: list[list[str]] = [[], []]

    def drain(store: Store, out: list[str]) -> None:
        while rows := store.claim(7, 10**6):
            out.extend(r.event_id for r in rows)
            store.delete(rows)

    threads = [
        threading.Thread(target=drain, args=(store, out))
        for store, out in ((first, taken[0]), (second, taken[1]), (first, taken[0]))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = taken[0] + taken[1]
    assert sorted(everything) == sorted(f"e{i}" for i in range(500))


def test_two_processes_never_hand_out_the_same_row(db: Path, tmp_path: Path) -> None:
    fill(Store(db), 2000)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from homing._store import Store\n"
        "store = Store(Path(sys.argv[1]))\n"
        "while rows := store.claim(13, 10**6):\n"
        "    print('\\n'.join(r.event_id for r in rows), flush=True)\n"
        "    store.delete(rows)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    everything = [e for out in outputs for e in out]
    assert len(everything) == 2000
    assert len(set(everything)) == 2000


def test_claims_of_a_dead_process_are_released_at_open(db: Path) -> None:
    store = Store(db)
    fill(store, 3)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    owner = f"{store._host}:{dead.stdout.strip()}:abcd"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET claimed_by = ?, claimed_until = 9e12", (owner,))
    assert Store(db).count(claimable_only=True) == 3


def test_claims_of_a_live_process_are_kept_at_open(db: Path) -> None:
    store = Store(db)
    fill(store, 3)
    store.claim(2, 10**6)
    assert Store(db).count(claimable_only=True) == 1


def test_after_fork_the_child_claims_under_its_own_name(db: Path) -> None:
    store = Store(db)
    fill(store, 4)
    parent_rows = store.claim(2, 10**6)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            store.after_fork_in_child()
            ids = [r.event_id for r in store.claim(10, 10**6)]
            os.write(write, ",".join(ids).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_ids = pipe.read().split(",")
    os.waitpid(pid, 0)
    assert child_ids == ["e2", "e3"]
    assert {r.event_id for r in parent_rows} == {"e0", "e1"}


def test_a_stale_ack_never_deletes_a_newer_event_that_reused_the_rowid(
    db: Path, clock: FakeClock
) -> None:
    store = Store(db, clock=clock, lease=30)
    fill(store, 1)
    stale = store.claim(1, 10**6)
    clock.advance(31)  # the lease runs out while the first request hangs
    store.delete(store.claim(1, 10**6))  # re-sent and acknowledged
    store.put("newer", b"{}")  # SQLite hands the freed rowid to the next row
    store.delete(stale)  # the hung request finally answers
    store.release(stale)
    assert [r.event_id for r in store.claim(10, 10**6)] == ["newer"]


def test_a_put_after_close_is_refused_and_never_moves_the_file_aside(db: Path) -> None:
    store = Store(db)
    store.put("a", b"{}")
    store.close()
    assert store.put("b", b"{}") is False  # closed: not corruption
    assert sorted(p.name for p in db.parent.iterdir() if ".corrupt-" in p.name) == []
    assert store.dropped == {}
    again = Store(db)
    assert again.count() == 1
    again.close()


def test_close_waits_for_a_maintenance_query_in_flight(db: Path) -> None:
    # SQLite connections must not be closed under a query running on another thread
    # (the interpreter can crash): close() waits for maintain() to finish.
    store = Store(db)
    store.put("a", b"{}")
    store.maintain()
    assert store._maint is not None
    real = store._maint
    inside, go = threading.Event(), threading.Event()
    log: list[str] = []

    class Slow:
        def execute(self, sql: str) -> sqlite3.Cursor:
            inside.set()
            go.wait(10)
            log.append("query done")
            return real.execute(sql)

        def close(self) -> None:
            log.append("closed")
            real.close()

    store._maint = Slow()  # type: ignore[assignment]
    store.put("b", b"{}")  # a checkpoint is due
    maintaining = threading.Thread(target=store.maintain)
    maintaining.start()
    assert inside.wait(10)
    closing = threading.Thread(target=store.close)
    closing.start()
    closing.join(0.2)
    go.set()
    maintaining.join(10)
    closing.join(10)
    assert log == ["query done", "closed"]
    store.maintain()  # after close: does nothing, raises nothing
