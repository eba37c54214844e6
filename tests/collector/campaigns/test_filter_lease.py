"""A run that waits for its FILTER hook keeps its lease: another process does not take
the activity over meanwhile, and every endpoint is sent once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path

import orjson

from homing_collector.campaigns.scheduler import Scheduler
from homing_collector.storage.sqlite import SQLiteStorage
from tests.collector.campaigns.test_scheduler import Clock, add_campaign, add_endpoints, pushed, run
from tests.collector.hooks.receiver import Answer, serving

LEASE = timedelta(seconds=0.3)


def slow_keep_all(_n: int, body: bytes) -> Answer:
    return Answer(200, delay=1.0, body=orjson.dumps(orjson.loads(body)["Endpoints"]))


def test_a_run_waiting_for_its_filter_hook_keeps_its_lease(tmp_path: Path) -> None:
    with serving(slow_keep_all) as [hook]:

        async def scenario(storage: SQLiteStorage, first: Scheduler, clock: Clock) -> None:
            await add_endpoints(storage, {"e1": None, "e2": None, "e3": None})
            await add_campaign(
                storage, "c1",
                Schedule={"StartTime": "IMMEDIATE", "Frequency": "ONCE"},
                Hook={"Mode": "FILTER", "WebUrl": hook.url},
            )  # fmt: skip
            first.lease = LEASE
            other = Scheduler(storage, first.gateway, clock=clock, lease=LEASE)
            other.dead = lambda _holder: False  # type: ignore[method-assign]
            running = asyncio.ensure_future(first.run_once())
            await asyncio.sleep(0.3)  # the run has claimed its activity and waits for the hook
            assert len(hook.received) == 0 and not running.done()
            clock.now += 4 * LEASE  # the lease taken at the claim has run out
            await asyncio.sleep(0.3)  # the run renews it meanwhile
            assert await other.run_once() == 0
            assert await running == 1
            await other.hooks.close()
            await first.hooks.close()

        run(tmp_path, scenario)
        assert len(hook.received) == 1
    assert Counter(pushed(tmp_path / "c.db")) == Counter({"e1": 1, "e2": 1, "e3": 1})
