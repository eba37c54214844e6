"""Run times, local-time delivery, quiet time and the per-endpoint delivery plan, DST
transitions included."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from homing_collector.campaigns.campaign_shapes import QuietTime, Schedule
from homing_collector.campaigns.delivery import Send, Skip, plan
from homing_collector.campaigns.quiet_time import quiet_until
from homing_collector.campaigns.schedule import (
    endpoint_zone,
    local_instant,
    next_run,
    run_times,
    runs_between,
)

UTC = timezone.utc
CREATED = datetime(2026, 1, 10, 8, 0, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def schedule(**raw: Any) -> Schedule:
    return msgspec.convert(raw, Schedule)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_once_and_immediate() -> None:
    assert list(run_times(schedule(StartTime="2026-02-01T09:00:00Z"), created=CREATED)) == [
        utc("2026-02-01T09:00:00")
    ]
    assert list(run_times(schedule(StartTime="IMMEDIATE"), created=CREATED)) == [CREATED]
    daily = schedule(StartTime="IMMEDIATE", Frequency="DAILY", EndTime="2026-01-12T08:00:00Z")
    assert list(run_times(daily, created=CREATED)) == [
        CREATED,
        CREATED + timedelta(days=1),
        CREATED + timedelta(days=2),  # EndTime itself is included
    ]


@pytest.mark.parametrize(
    ("frequency", "step"),
    [("HOURLY", timedelta(hours=1)), ("DAILY", timedelta(days=1)), ("WEEKLY", timedelta(weeks=1))],
)
def test_fixed_periods_up_to_end_time(frequency: str, step: timedelta) -> None:
    start = utc("2026-03-01T10:00:00")
    s = schedule(
        StartTime="2026-03-01T10:00:00Z",
        EndTime=(start + 3 * step + timedelta(seconds=1)).isoformat(),
        Frequency=frequency,
    )
    assert list(run_times(s, created=CREATED)) == [start + i * step for i in range(4)]


def test_monthly_keeps_the_day_or_takes_the_months_last() -> None:
    s = schedule(
        StartTime="2027-12-31T09:00:00Z", Frequency="MONTHLY", EndTime="2028-05-01T00:00:00Z"
    )
    assert [r.date().isoformat() for r in run_times(s, created=CREATED)] == [
        "2027-12-31", "2028-01-31", "2028-02-29", "2028-03-31", "2028-04-30",
    ]  # fmt: skip
    assert all(r.hour == 9 for r in run_times(s, created=CREATED))


def test_monthly_counts_days_in_the_timezone_offset() -> None:
    # 23:30 on 31 January at UTC-05 is 04:30 on 1 February in UTC.
    s = schedule(StartTime="2026-01-31T23:30:00-05:00", Timezone="UTC-05", Frequency="MONTHLY")
    runs = run_times(s, created=CREATED)
    assert [next(runs) for _ in range(3)] == [
        utc("2026-02-01T04:30:00"),
        utc("2026-03-01T04:30:00"),  # 28 February, 23:30 at UTC-05
        utc("2026-04-01T04:30:00"),
    ]


def test_event_campaigns_have_no_runs() -> None:
    s = schedule(
        StartTime="IMMEDIATE",
        Frequency="EVENT",
        EventFilter={"FilterType": "ENDPOINT", "Dimensions": {}},
    )
    assert list(run_times(s, created=CREATED)) == []
    assert next_run(s, CREATED, created=CREATED) is None


def test_missed_runs_while_down() -> None:
    s = schedule(StartTime="2026-01-01T00:00:00Z", Frequency="HOURLY")
    runs = runs_between(s, utc("2026-01-02T10:30:00"), utc("2026-01-02T13:00:00"), created=CREATED)
    assert runs == [
        utc("2026-01-02T11:00:00"),
        utc("2026-01-02T12:00:00"),
        utc("2026-01-02T13:00:00"),
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["ONCE", "HOURLY", "DAILY", "WEEKLY", "MONTHLY"]),
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1)),
    st.sampled_from(["UTC", "UTC+05:30", "UTC-07", "UTC+13"]),
    st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=400)),
    st.booleans(),
)
def test_next_run_is_the_first_run_after(
    frequency: str, start: datetime, zone: str, offset: timedelta, with_end: bool
) -> None:
    start = start.replace(tzinfo=UTC)
    end = start + timedelta(days=200)
    s = schedule(
        StartTime=start.isoformat(),
        Frequency=frequency,
        Timezone=zone,
        **({"EndTime": end.isoformat()} if with_end else {}),
    )
    after = start + offset
    expected = None
    for run in run_times(s, created=CREATED):
        if run > after:
            expected = run
            break
        if run > start + timedelta(days=500):
            break
    assert next_run(s, after, created=CREATED) == expected


def test_local_time_reads_the_clock_time_in_the_endpoints_zone() -> None:
    s = schedule(StartTime="2026-12-01T09:00:00-05:00", Timezone="UTC-05", IsLocalTime=True)
    run = utc("2026-12-01T14:00:00")
    assert local_instant(run, s, PARIS) == utc("2026-12-01T08:00:00")  # 09:00 in Paris
    assert local_instant(run, s, NEW_YORK) == run


def test_local_time_follows_dst() -> None:
    # Daily at 09:00 (UTC); Paris moves to summer time on 29 March 2026.
    s = schedule(StartTime="2026-03-28T09:00:00Z", Frequency="DAILY", IsLocalTime=True)
    every = run_times(s, created=CREATED)
    runs = [next(every), next(every)]
    local = [local_instant(r, s, PARIS) for r in runs]
    assert local == [utc("2026-03-28T08:00:00"), utc("2026-03-29T07:00:00")]
    assert all(t.astimezone(PARIS).hour == 9 for t in local)


def test_a_skipped_clock_time_goes_when_the_clock_jumps_past_it() -> None:
    # 02:30 does not exist in New York on 8 March 2026: the clock jumps from 02:00 to 03:00.
    s = schedule(StartTime="2026-03-08T02:30:00Z", IsLocalTime=True)
    sent = local_instant(utc("2026-03-08T02:30:00"), s, NEW_YORK)
    assert sent == utc("2026-03-08T07:00:00")
    assert sent.astimezone(NEW_YORK).strftime("%H:%M %Z") == "03:00 EDT"


def test_a_repeated_clock_time_goes_at_its_first_occurrence() -> None:
    # 01:30 happens twice in New York on 1 November 2026: EDT first.
    s = schedule(StartTime="2026-11-01T01:30:00Z", IsLocalTime=True)
    sent = local_instant(utc("2026-11-01T01:30:00"), s, NEW_YORK)
    assert sent == utc("2026-11-01T05:30:00")


def test_endless_schedules_end_at_the_calendars_end() -> None:
    s = schedule(StartTime="9999-12-30T00:00:00Z", Frequency="DAILY")
    assert len(list(run_times(s, created=CREATED))) == 2
    assert next_run(s, utc("9999-12-31T00:00:00"), created=CREATED) is None


@pytest.mark.parametrize(
    "name", [None, "", "Mars/Olympus_Mons", "../../etc/passwd", "UTC+02", 5, "x" * 100]
)
def test_invalid_time_zones(name: object) -> None:
    assert endpoint_zone(name) is None


def test_valid_time_zone() -> None:
    assert endpoint_zone("Europe/Paris") == PARIS


NIGHT = QuietTime(Start="22:00", End="07:00")
LUNCH = QuietTime(Start="12:00", End="14:00")


@pytest.mark.parametrize(
    ("quiet", "local", "until"),
    [
        (NIGHT, "2026-12-06T23:30", "2026-12-07T07:00"),
        (NIGHT, "2026-12-07T03:00", "2026-12-07T07:00"),
        (NIGHT, "2026-12-06T22:00", "2026-12-07T07:00"),
        (NIGHT, "2026-12-07T07:00", None),
        (NIGHT, "2026-12-07T21:59", None),
        (LUNCH, "2026-12-07T12:00", "2026-12-07T14:00"),
        (LUNCH, "2026-12-07T13:59", "2026-12-07T14:00"),
        (LUNCH, "2026-12-07T14:00", None),
        (LUNCH, "2026-12-07T11:00", None),
        (QuietTime(Start="09:00", End="09:00"), "2026-12-07T09:00", None),
        (QuietTime(), "2026-12-07T09:00", None),
    ],
)
def test_quiet_window(quiet: QuietTime, local: str, until: str | None) -> None:
    at = datetime.fromisoformat(local).replace(tzinfo=PARIS)
    got = quiet_until(quiet, at, PARIS)
    assert (
        got.astimezone(PARIS).replace(tzinfo=None).isoformat(timespec="minutes") if got else None
    ) == until


def test_quiet_time_needs_a_zone() -> None:
    assert quiet_until(NIGHT, utc("2026-12-06T23:30:00"), None) is None


def test_quiet_time_across_dst() -> None:
    # The night Paris springs forward: the window 22:00-07:00 lasts 8 hours, not 9.
    at = datetime(2026, 3, 28, 22, 0, tzinfo=PARIS)
    until = quiet_until(NIGHT, at, PARIS)
    assert until is not None and until - at == timedelta(hours=8)
    assert until.astimezone(PARIS).hour == 7
    # An End that the change skips: the window ends when the clock jumps past it.
    skipped = quiet_until(
        QuietTime(Start="01:00", End="02:30"), datetime(2026, 3, 29, 1, 15, tzinfo=PARIS), PARIS
    )
    assert skipped == utc("2026-03-29T01:00:00")  # 02:00 CET, which the clock reads 03:00 CEST
    # Hours that the change repeats: a message due in the repeat waits for the second End.
    repeat = datetime(2026, 10, 25, 2, 10, tzinfo=PARIS, fold=1)  # 02:10 CET, the second time
    assert quiet_until(QuietTime(Start="01:00", End="02:30"), repeat, PARIS) == utc(
        "2026-10-25T01:30:00"
    )
    # A window across midnight whose End the change brings back the same night: at 02:59
    # CEST the clock goes back to 02:00 CET, and reads 02:30 half an hour later.
    late = utc("2026-10-25T00:59:00")
    assert quiet_until(QuietTime(Start="02:45", End="02:30"), late, PARIS) == utc(
        "2026-10-25T01:30:00"
    )


def delivered(**overrides: Any) -> Send | Skip:
    args: dict[str, Any] = {
        "run": utc("2026-12-06T21:00:00"),  # 22:00 in Paris
        "schedule": schedule(StartTime="2026-12-06T21:00:00Z"),
        "quiet": None,
        "endpoint_timezone": "Europe/Paris",
        "maximum_duration": None,
        "now": utc("2026-12-06T21:00:00"),
    }
    args.update(overrides)
    return plan(**args)


def test_plain_delivery_goes_at_the_run() -> None:
    assert delivered() == Send(utc("2026-12-06T21:00:00"))
    assert delivered(now=utc("2026-12-06T21:05:00")) == Send(utc("2026-12-06T21:05:00"))


def test_local_time_without_a_zone_is_skipped() -> None:
    local = schedule(StartTime="2026-12-06T21:00:00Z", IsLocalTime=True)
    assert delivered(schedule=local, endpoint_timezone=None) == Skip("ENDPOINT_MISSING_TIMEZONE")
    assert delivered(schedule=local, endpoint_timezone="Nowhere/Land") == Skip(
        "ENDPOINT_MISSING_TIMEZONE"
    )
    # 21:00 by the clock, in Paris, is 20:00 UTC; it is sent then if the run began early enough.
    assert delivered(schedule=local, now=utc("2026-12-06T12:00:00")) == Send(
        utc("2026-12-06T20:00:00")
    )


def test_quiet_time_delays_until_the_window_ends() -> None:
    assert delivered(quiet=NIGHT) == Send(utc("2026-12-07T06:00:00"))  # 07:00 in Paris
    assert delivered(quiet=NIGHT, maximum_duration=9 * 3600) == Send(utc("2026-12-07T06:00:00"))
    assert delivered(quiet=NIGHT, maximum_duration=9 * 3600 - 1) == Skip("QUIET_TIME")


def test_quiet_time_does_not_apply_without_a_valid_zone() -> None:
    # Pinpoint: quiet time applies only when Demographic.Timezone is valid.
    assert delivered(quiet=NIGHT, endpoint_timezone=None) == Send(utc("2026-12-06T21:00:00"))


def test_a_late_run_past_maximum_duration_is_skipped() -> None:
    assert delivered(maximum_duration=60, now=utc("2026-12-06T21:01:00")) == Send(
        utc("2026-12-06T21:01:00")
    )
    assert delivered(maximum_duration=60, now=utc("2026-12-06T21:01:01")) == Skip(
        "MAXIMUM_DURATION"
    )


def test_event_messages_have_five_minutes() -> None:
    event = schedule(
        StartTime="IMMEDIATE",
        Frequency="EVENT",
        IsLocalTime=True,
        EventFilter={"FilterType": "ENDPOINT", "Dimensions": {}},
    )
    t = utc("2026-12-06T15:00:00")
    assert delivered(schedule=event, run=t, now=t + timedelta(minutes=5)) == Send(
        t + timedelta(minutes=5)
    )
    assert delivered(schedule=event, run=t, now=t + timedelta(minutes=5, seconds=1)) == Skip(
        "MAXIMUM_DURATION"
    )
    # Local time does not delay an event's message; quiet time past five minutes drops it.
    assert delivered(schedule=event, run=t, now=t, endpoint_timezone=None) == Send(t)
    assert delivered(
        schedule=event, run=utc("2026-12-06T22:00:00"), now=utc("2026-12-06T22:00:00"), quiet=NIGHT
    ) == Skip("QUIET_TIME")


QUIRKY_ZONES = [
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",  # half-hour DST
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/Santiago",  # DST changes at midnight
    "Asia/Kolkata",
    "UTC",
]
# Days of 2026 when one of QUIRKY_ZONES changes its clocks.
DST_DAYS = ["2026-03-08", "2026-03-29", "2026-04-04", "2026-04-05", "2026-09-06", "2026-09-27"]
DST_DAYS += ["2026-10-04", "2026-10-25", "2026-11-01"]
CLOCK = st.builds(
    lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30, 45])
)


def bf_quiet(start: str, end: str, at: datetime, zone: ZoneInfo) -> datetime | None:
    """Step a minute at a time until the endpoint's clock reads a time outside the window."""

    def inside(moment: datetime) -> bool:
        clock = moment.astimezone(zone).strftime("%H:%M")
        if start < end:
            return start <= clock < end
        return clock >= start or clock < end

    if start == end or not inside(at):
        return None
    moment = at
    while inside(moment):
        moment += timedelta(minutes=1)
    return moment


@settings(max_examples=400, deadline=None)
@given(
    CLOCK,
    CLOCK,
    st.sampled_from(QUIRKY_ZONES),
    st.one_of(
        st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1)),
        # Around the year's DST changes in these zones, where the rules bite.
        st.builds(
            lambda day, minutes: datetime.fromisoformat(day) + timedelta(minutes=minutes),
            st.sampled_from(DST_DAYS),
            st.integers(-24 * 60, 48 * 60),
        ),
    ),
)
def test_quiet_time_matches_a_minute_by_minute_clock(
    start: str, end: str, zone_name: str, moment: datetime
) -> None:
    zone = ZoneInfo(zone_name)
    at = moment.replace(second=0, microsecond=0, tzinfo=UTC)
    got = quiet_until(QuietTime(Start=start, End=end), at, zone)
    assert got == bf_quiet(start, end, at, zone)


# (zone, the local clock time of a 2026 DST change): gaps and repeats of 30 to 60 minutes.
CHANGES = [
    ("Europe/Paris", "2026-03-29T02:00"),
    ("Europe/Paris", "2026-10-25T03:00"),
    ("America/New_York", "2026-03-08T02:00"),
    ("America/New_York", "2026-11-01T02:00"),
    ("Australia/Lord_Howe", "2026-04-05T02:00"),
    ("Australia/Lord_Howe", "2026-10-04T02:00"),
    ("Pacific/Chatham", "2026-04-05T03:45"),
    ("Pacific/Chatham", "2026-09-27T02:45"),
    ("America/Santiago", "2026-04-05T00:00"),
    ("America/Santiago", "2026-09-06T00:00"),
]


def near(change: str, minutes: int) -> str:
    return (datetime.fromisoformat(change) + timedelta(minutes=minutes)).strftime("%H:%M")


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(CHANGES),
    st.integers(-12, 12).map(lambda q: q * 15),  # Start, in minutes from the change
    st.integers(-12, 12).map(lambda q: q * 15),  # End
    st.integers(-5 * 60, 5 * 60),  # the message's time, in minutes from the change (UTC)
)
# Paris falls back from 03:00 to 02:00: a message at 02:59 in a 02:45-03:00 window goes at
# the change, when the clock reads 02:00, before Start.
@example(("Europe/Paris", "2026-10-25T03:00"), -15, 0, -61)
def test_quiet_time_across_dst_matches_the_clock(
    change: tuple[str, str], start: int, end: int, minutes: int
) -> None:
    zone = ZoneInfo(change[0])
    at = datetime.fromisoformat(change[1]).replace(tzinfo=zone).astimezone(UTC)
    at += timedelta(minutes=minutes)
    window = QuietTime(Start=near(change[1], start), End=near(change[1], end))
    assert quiet_until(window, at, zone) == bf_quiet(
        near(change[1], start), near(change[1], end), at, zone
    )
