"""Background loops and how they stop: a loop woken as it is cancelled must end."""

from __future__ import annotations

import asyncio

import pytest

from homing_collector import retention
from homing_collector.lifetime import wait_set
from tests.collector.closing import check_closes_as_woken


def test_wait_set_says_whether_the_event_was_set() -> None:
    async def main() -> tuple[bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_set(event, 0.01)
        asyncio.get_running_loop().call_soon(event.set)
        return timed_out, await wait_set(event, 60)

    assert asyncio.run(main()) == (False, True)


def test_wait_set_cancelled_as_the_event_is_set_is_cancelled() -> None:
    # asyncio.wait_for(event.wait(), timeout) returns True here on Python 3.11: the
    # cancellation is lost, and a loop stopped by cancelling it runs on.
    async def main() -> None:
        event = asyncio.Event()
        waiting = asyncio.ensure_future(wait_set(event, 60))
        for _ in range(3):  # until it waits
            await asyncio.sleep(0)
        event.set()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())


class NoLease:
    """A storage whose retention lease is always another's; it says when it was asked."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    async def take_lease(self, name: str, owner: str, now_ms: int, ttl_ms: int) -> bool:
        self.asked.set()
        return False


def test_a_sweeper_closed_as_it_is_woken_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """A retention period changed as the collector stops wakes the sweeper as close()
    cancels it: the cancellation must end its loop, or close() waits forever."""
    monkeypatch.setattr(retention, "FIRST_SWEEP", 0.0)

    async def main() -> None:
        storage = NoLease()
        sweeper = retention.Sweeper(storage, interval=60)  # type: ignore[arg-type]
        await sweeper.start()
        await storage.asked.wait()  # its loop waits now, for a wake or the next sweep

        await check_closes_as_woken(sweeper, "sweeper")

    asyncio.run(main())
