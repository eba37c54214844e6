"""The scheduler with an injected clock, on a real SQLite file: quiet time holds messages
until the window ends, Daily and Total caps hold across runs, a paused campaign skips its
runs, and runs missed while the collector was down are run once or recorded as missed."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from homing_collector.campaigns.scheduler import Scheduler, _uuid4
from homing_collector.endpoints import merge
from homing_collector.metrics import Metrics
from homing_collector.push.gateway import Gateway
from homing_collector.storage.base import AppRecord, CampaignRecord, EndpointUpdate
from homing_collector.storage.sqlite import SQLiteStorage
from tests.collector.closing import check_closes_as_woken

APP = "app-1"
START = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
MESSAGE = {"DefaultMessage": {"Title": "Hi", "Body": "Sale"}}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


Scenario = Callable[[SQLiteStorage, Scheduler, Clock], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario) -> None:
    async def main() -> None:
        storage = SQLiteStorage(tmp_path / "c.db")
        await storage.start()
        gateway = Gateway(storage, Metrics(), heartbeat=20, queue_limit=100, default_ttl=3600,
                          shared=False)  # fmt: skip
        clock = Clock(START)
        try:
            await storage.create_app(AppRecord(APP, "a", "2026-12-01T00:00:00Z"))
            await scenario(storage, Scheduler(storage, gateway, clock=clock), clock)
        finally:
            await storage.close()

    asyncio.run(main())


async def add_endpoints(storage: SQLiteStorage, zones: dict[str, str | None]) -> None:
    updates = [
        EndpointUpdate(endpoint_id, {
            "ChannelType": "GCM",
            "Demographic": {"Platform": "android", **({"Timezone": zone} if zone else {})},
        })
        for endpoint_id, zone in zones.items()
    ]  # fmt: skip
    await storage.update_endpoints(
        APP, updates, merge=partial(merge, APP, now="2026-12-01T00:00:00Z"), max_user_endpoints=15
    )


async def add_campaign(storage: SQLiteStorage, campaign_id: str, **request: Any) -> None:
    from homing_collector.storage.base import SegmentRecord

    if await storage.get_segment(APP, "everyone") is None:
        await storage.create_segment(
            SegmentRecord(APP, "everyone", 1, "2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z",
                          "{}"), [],
        )  # fmt: skip
    body = {"SegmentId": "everyone", "MessageConfiguration": MESSAGE, **request}
    stamp = START.isoformat().replace("+00:00", "Z")
    record = CampaignRecord(APP, campaign_id, 1, stamp, stamp, orjson.dumps(body).decode(),
                            "everyone", "SCHEDULED")  # fmt: skip
    await storage.create_campaign(record, None)


def sends(db: Path, campaign_id: str) -> list[tuple[str, str, str]]:
    """(activity, endpoint, status) of each send record, by activity and endpoint."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT a.scheduled_ms, s.endpoint_id, s.status FROM campaign_sends s"
            " JOIN campaign_activities a USING (app_id, campaign_id, activity_id)"
            " WHERE s.campaign_id = ? ORDER BY a.scheduled_ms, s.endpoint_id",
            (campaign_id,),
        ).fetchall()
    return [(str(r[0]), r[1], r[2]) for r in rows]


def pushed(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT endpoint_id FROM push_messages ORDER BY endpoint_id")
        return [row[0] for row in rows]


def test_quiet_time_holds_a_message_until_the_window_ends(tmp_path: Path) -> None:
    async def scenario(storage: SQLiteStorage, scheduler: Scheduler, clock: Clock) -> None:
        # 12:00 UTC is 21:00 in Tokyo, inside 20:00-08:00; 13:00 in Paris, outside.
        await add_endpoints(storage, {"paris": "Europe/Paris", "tokyo": "Asia/Tokyo",
                                      "nowhere": None})  # fmt: skip
        await add_campaign(storage, "c1", Schedule={
            "StartTime": "IMMEDIATE", "QuietTime": {"Start": "20:00", "End": "08:00"}})  # fmt: skip
        assert await scheduler.run_once() == 1
        assert pushed(tmp_path / "c.db") == ["nowhere", "paris"]
        assert [r[1:] for r in sends(tmp_path / "c.db", "c1")] == [
            ("nowhere", "SENT"), ("paris", "SENT"), ("tokyo", "DEFERRED"),
        ]  # fmt: skip
        [activity] = await storage.list_activities(APP, "c1", after=0, limit=10)
        assert activity.state == "RUNNING"
        clock.now = START + timedelta(hours=10, minutes=59)  # 07:59 in Tokyo
        assert await scheduler.run_once() == 0
        clock.now = START + timedelta(hours=11)  # 08:00 in Tokyo: the window ends
        assert await scheduler.run_once() == 1
        assert pushed(tmp_path / "c.db") == ["nowhere", "paris", "tokyo"]
        [activity] = await storage.list_activities(APP, "c1", after=0, limit=10)
        assert (activity.state, activity.total) == ("COMPLETED", 3)
        record = await storage.get_campaign(APP, "c1")
        assert record is not None and record.state == "COMPLETED"

    run(tmp_path, scenario)


def test_quiet_time_past_maximum_duration_drops_the_message(tmp_path: Path) -> None:
    async def scenario(storage: SQLiteStorage, scheduler: Scheduler, clock: Clock) -> None:
        await add_endpoints(storage, {"tokyo": "Asia/Tokyo"})
        await add_campaign(storage, "c1", Limits={"MaximumDuration": 3600}, Schedule={
            "StartTime": "IMMEDIATE", "QuietTime": {"Start": "20:00", "End": "08:00"}})  # fmt: skip
        await scheduler.run_once()
        assert pushed(tmp_path / "c.db") == []
        [activity] = await storage.list_activities(APP, "c1", after=0, limit=10)
        assert (activity.state, activity.metrics) == ("COMPLETED", {"QUIET_TIME": 1})

    run(tmp_path, scenario)


def test_daily_and_total_caps_hold_across_hourly_runs(tmp_path: Path) -> None:
    async def scenario(storage: SQLiteStorage, scheduler: Scheduler, clock: Clock) -> None:
        await add_endpoints(storage, {"e1": None, "e2": None})
        await add_campaign(storage, "c1", Limits={"Daily": 2, "Total": 3}, Schedule={
            "StartTime": "IMMEDIATE", "Frequency": "HOURLY"})  # fmt: skip
        statuses = []
        for hour in range(5):
            clock.now = START + timedelta(hours=hour, seconds=1)
            await scheduler.run_once()
            activities = await storage.list_activities(APP, "c1", after=0, limit=10)
            assert len(activities) == hour + 1
            statuses.append(activities[-1].metrics)
        # Two a day; the 24 hours slide, so the third waits for the next day.
        assert [m.get("SENT", 0) for m in statuses] == [2, 2, 0, 0, 0]
        assert [m.get("DAILY_CAP", 0) for m in statuses] == [0, 0, 2, 2, 2]
        clock.now = START + timedelta(days=1, seconds=2)
        await scheduler.run_once()
        clock.now = START + timedelta(days=1, hours=1, seconds=2)
        await scheduler.run_once()
        last = (await storage.list_activities(APP, "c1", after=0, limit=100))[-2:]
        # The runs missed in between were recorded, not sent.
        assert [a.metrics for a in last] == [{"SENT": 2}, {"TOTAL_CAP": 2}]
        assert len(pushed(tmp_path / "c.db")) == 6

    run(tmp_path, scenario)


def test_a_paused_campaign_skips_its_runs_and_missed_runs_are_recorded(tmp_path: Path) -> None:
    async def scenario(storage: SQLiteStorage, scheduler: Scheduler, clock: Clock) -> None:
        await add_endpoints(storage, {"e1": None})
        await add_campaign(storage, "paused", IsPaused=True, Schedule={
            "StartTime": "IMMEDIATE", "Frequency": "HOURLY"})  # fmt: skip
        await add_campaign(storage, "down", Schedule={
            "StartTime": "IMMEDIATE", "Frequency": "HOURLY"})  # fmt: skip
        clock.now = START + timedelta(hours=3, minutes=30)  # the collector was down
        await scheduler.run_once()
        assert await storage.list_activities(APP, "paused", after=0, limit=10) == []
        down = await storage.list_activities(APP, "down", after=0, limit=10)
        assert [(a.state, a.result) for a in down] == [("CANCELLED", "FAIL")] * 3 + [
            ("COMPLETED", "SUCCESS")
        ]
        assert down[-1].scheduled_ms == int((START + timedelta(hours=3)).timestamp() * 1000)
        assert pushed(tmp_path / "c.db") == ["e1"]

    run(tmp_path, scenario)


def test_a_run_whose_segment_cannot_be_resolved_fails_and_sends_nothing(tmp_path: Path) -> None:
    async def scenario(storage: SQLiteStorage, scheduler: Scheduler, clock: Clock) -> None:
        from homing_collector.storage.base import SegmentRecord, SegmentReference

        await add_endpoints(storage, {"e1": None})
        stamp = "2026-12-01T00:00:00Z"
        await storage.create_segment(SegmentRecord(APP, "base", 1, stamp, stamp, "{}"), [])
        derived = {"SegmentGroups": {"Groups": [{"SourceSegments": [{"Id": "base"}]}]}}
        await storage.create_segment(
            SegmentRecord(APP, "derived", 1, stamp, stamp, orjson.dumps(derived).decode()),
            [SegmentReference("SegmentGroups.Groups[0].SourceSegments[0]", "base", None)],
        )
        body = {"SegmentId": "derived", "MessageConfiguration": MESSAGE,
                "Schedule": {"StartTime": "IMMEDIATE"}}  # fmt: skip
        stamp = START.isoformat().replace("+00:00", "Z")
        await storage.create_campaign(
            CampaignRecord(APP, "c1", 1, stamp, stamp, orjson.dumps(body).decode(), "derived",
                           "SCHEDULED"), None,
        )  # fmt: skip
        await storage.delete_segment(APP, "base")  # the source of the campaign's segment
        await scheduler.run_once()
        [activity] = await storage.list_activities(APP, "c1", after=0, limit=10)
        assert (activity.state, activity.result, activity.total) == ("COMPLETED", "FAIL", 0)
        assert pushed(tmp_path / "c.db") == []

    run(tmp_path, scenario)


def test_events_whose_matches_were_lost_are_matched_again_at_start_up_once(
    tmp_path: Path,
) -> None:
    async def scenario(storage: SQLiteStorage, scheduler: Scheduler, clock: Clock) -> None:
        from homing_collector.storage.base import EventRow

        await add_endpoints(storage, {"e1": None, "e2": None})
        event_filter = {"FilterType": "ENDPOINT",
                        "Dimensions": {"EventType": {"Values": ["purchase"]}}}  # fmt: skip
        schedule = {"StartTime": "IMMEDIATE", "Frequency": "EVENT", "EventFilter": event_filter}
        await add_campaign(storage, "c1", Schedule=schedule)  # created at START
        clock.now = START + timedelta(minutes=20)
        now_ms = int(clock.now.timestamp() * 1000)
        body = orjson.dumps({"EventType": "purchase", "Timestamp": "2026-12-07T12:00:00Z"})
        # Stored, but the collector died before matching them: e1's came a minute ago,
        # e2's ten minutes ago, past the five minutes an event campaign has to answer.
        # Both came after the campaign was created.
        rows = [
            EventRow("e1", "ev1", "purchase", now_ms - 60_000, now_ms - 60_000, None, body),
            EventRow("e2", "ev2", "purchase", now_ms - 600_000, now_ms - 600_000, None, body),
        ]
        await storage.put_events(
            APP, [], rows, merge=partial(merge, APP, now="2026-12-07T12:00:00Z"),
            max_event_types=1500, max_user_endpoints=15,
        )  # fmt: skip
        for _ in range(2):  # two starts: the second answers nothing again
            await scheduler.start()
            for _ in range(100):
                if pushed(tmp_path / "c.db"):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            await scheduler.close()
            assert pushed(tmp_path / "c.db") == ["e1"]

    run(tmp_path, scenario)


def test_a_local_time_run_reaches_each_zone_at_its_own_clock_time(tmp_path: Path) -> None:
    async def scenario(storage: SQLiteStorage, scheduler: Scheduler, clock: Clock) -> None:
        # 09:00 on 9 December, read in each endpoint's zone: Auckland (UTC+13) first, the
        # day before in UTC, then London (UTC+0), then New York (UTC-5).
        await add_endpoints(storage, {"auckland": "Pacific/Auckland", "london": "Europe/London",
                                      "new-york": "America/New_York", "nowhere": None})  # fmt: skip
        schedule = {"StartTime": "2026-12-09T09:00:00Z", "Frequency": "ONCE", "IsLocalTime": True}
        await add_campaign(storage, "c1", Schedule=schedule)
        expected = {
            "auckland": datetime(2026, 12, 8, 20, 0, tzinfo=timezone.utc),
            "london": datetime(2026, 12, 9, 9, 0, tzinfo=timezone.utc),
            "new-york": datetime(2026, 12, 9, 14, 0, tzinfo=timezone.utc),
        }
        got: list[str] = []
        for moment in sorted(expected.values()):
            clock.now = moment - timedelta(minutes=1)
            await scheduler.run_once()
            assert pushed(tmp_path / "c.db") == sorted(got), clock.now  # not before its time
            clock.now = moment
            await scheduler.run_once()
            got += [endpoint for endpoint, at in expected.items() if at == moment]
            assert pushed(tmp_path / "c.db") == sorted(got), clock.now  # at its time
        [activity] = await storage.list_activities(APP, "c1", after=0, limit=10)
        # TotalEndpointCount counts the pushes sent; the endpoint without a zone, none.
        assert (activity.state, activity.total) == ("COMPLETED", 3)
        assert activity.metrics.get("ENDPOINT_MISSING_TIMEZONE") == 1

    run(tmp_path, scenario)


def test_a_scheduler_closed_as_it_is_woken_stops(tmp_path: Path) -> None:
    """A campaign written as the collector stops wakes the loop as close() cancels it: the
    cancellation must end the loop (with `asyncio.wait_for` on Python 3.11 the wait
    returned instead, and close() waited forever)."""

    async def scenario(storage: SQLiteStorage, scheduler: Scheduler, _clock: Clock) -> None:
        looked = asyncio.Event()

        async def run_once() -> int:
            looked.set()
            return 0

        scheduler.tick = 60
        scheduler.run_once = run_once  # type: ignore[method-assign]
        await scheduler.start()
        await looked.wait()  # its loop waits now, for a wake or the next tick

        await check_closes_as_woken(scheduler, "scheduler")

    run(tmp_path, scenario)


def test_message_ids_are_distinct_version_4_uuids_in_their_usual_form() -> None:
    made = [_uuid4() for _ in range(2000)]
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_trigger_pass_of_many_matches_records_each_event_once_across_its_statements(
    tmp_path: Path,
) -> None:
    async def scenario(storage: SQLiteStorage, scheduler: Scheduler, clock: Clock) -> None:
        from homing_collector.campaigns.triggers import Match

        await add_endpoints(storage, {f"e{i}": None for i in range(11)})
        event_filter = {"FilterType": "ENDPOINT",
                        "Dimensions": {"EventType": {"Values": ["purchase"]}}}  # fmt: skip
        schedule = {"StartTime": "IMMEDIATE", "Frequency": "EVENT", "EventFilter": event_filter}
        await add_campaign(storage, "c1", Schedule=schedule)
        clock.now = START + timedelta(seconds=30)
        await scheduler.plan()

        def matches(ids: range) -> list[Match]:
            return [Match(APP, "c1", f"e{i}", f"ev{i}", clock.now) for i in ids]

        # 7 records (statements of 4, 2 and 1 rows), then the same 7 sent again with 4
        # more: only the 4 are new.
        await scheduler.triggers.send(matches(range(7)))
        await scheduler.triggers.send(matches(range(11)))
        db = tmp_path / "c.db"
        assert sorted(pushed(db)) == sorted(f"e{i}" for i in range(11))
        with contextlib.closing(sqlite3.connect(db)) as conn:
            (records,) = conn.execute("SELECT count(*) FROM campaign_sends").fetchone()
            (events,) = conn.execute(
                "SELECT count(*) FROM events WHERE event_type = '_campaign.send'"
            ).fetchone()
        assert (records, events) == (11, 11)
        [activity] = await storage.list_activities(APP, "c1", after=0, limit=10)
        assert activity.metrics == {"SENT": 11}

    run(tmp_path, scenario)
