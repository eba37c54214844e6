"""The store against a model: whatever the order of operations, no row is lost or leased twice."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from homing._store import Row, Store
from tests.sdk.conftest import FakeClock


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.clock = FakeClock()
        path = Path(self.dir.name) / "events.sqlite3"
        # Two stores on one file, as two processes sharing a data dir would be.
        self.stores = [
            Store(path, clock=self.clock, lease=30),
            Store(path, clock=self.clock, lease=30),
        ]
        self.queued: set[str] = set()
        self.leased: dict[str, tuple[float, int]] = {}  # event id -> (lease end, store)
        self.held: list[tuple[int, list[Row]]] = []
        self.next_id = 0

    @rule(n=st.integers(1, 5), which=st.integers(0, 1))
    def put(self, n: int, which: int) -> None:
        for _ in range(n):
            event_id = f"e{self.next_id}"
            self.next_id += 1
            self.stores[which].put(event_id, b'{"EventType":"x"}')
            self.queued.add(event_id)

    @rule(limit=st.integers(1, 10), which=st.integers(0, 1))
    def claim(self, limit: int, which: int) -> None:
        rows = self.stores[which].claim(limit, 10**6)
        now = self.clock.now
        free = sorted(
            (e for e in self.queued if self.leased.get(e, (0, 0))[0] <= now),
            key=lambda e: int(e[1:]),
        )
        assert [r.event_id for r in rows] == free[:limit]
        for row in rows:
            self.leased[row.event_id] = (now + 30, which)
        if rows:
            self.held.append((which, rows))

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 100))
    def ack(self, index: int) -> None:
        which, rows = self.held.pop(index % len(self.held))
        self.stores[which].delete(rows)
        for row in rows:
            self.queued.discard(row.event_id)
            self.leased.pop(row.event_id, None)

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 100))
    def fail(self, index: int) -> None:
        which, rows = self.held.pop(index % len(self.held))
        self.stores[which].release(rows)
        for row in rows:
            # A release frees only rows that this store holds now (the other may have
            # claimed them after the lease ran out).
            if row.event_id in self.queued and self.leased[row.event_id][1] == which:
                self.leased[row.event_id] = (0, which)

    @rule(seconds=st.sampled_from([1, 10, 31]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @invariant()
    def counts_match(self) -> None:
        assert self.stores[0].count() == len(self.queued)

    def teardown(self) -> None:
        for store in self.stores:
            store.close()
        self.dir.cleanup()


StoreMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestStore = StoreMachine.TestCase
