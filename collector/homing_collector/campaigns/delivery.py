"""When one endpoint gets one run's message, or why it does not.

This joins the schedule's local time, quiet time and the delivery deadline:

1. A local-time campaign is due at the run's clock time in the endpoint's zone; an
   endpoint without a valid zone is skipped as ENDPOINT_MISSING_TIMEZONE (Pinpoint).
2. A message is not sent before `now`: a run processed late sends at once.
3. Inside quiet time the message waits for the window's end (`quiet_time`).
4. The deadline is `MaximumDuration` seconds after the endpoint's due time (Pinpoint:
   "the maximum amount of time ... that a campaign can attempt to deliver a message after
   the scheduled start time"). An event-triggered message also has Pinpoint's five
   minutes from the event. A message that cannot go by then is skipped.

Skip reasons are Pinpoint's ExecutionMetrics names where one exists; QUIET_TIME and
MAXIMUM_DURATION are Homing's, for the messages quiet time or a late run held past the
deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .campaign_shapes import QuietTime, Schedule
from .quiet_time import quiet_until
from .schedule import endpoint_zone, local_instant

# "If Amazon Pinpoint can't deliver a message from an event-based campaign within five
# minutes, it drops the message" (Pinpoint user guide, segments-importing; DG quotas).
EVENT_DELIVERY_WINDOW = timedelta(minutes=5)

# The event the collector records for each message a campaign sends (Pinpoint's event
# stream name). The endpoint did nothing: analytics counts it, but not as activity.
CAMPAIGN_SEND = "_campaign.send"

ENDPOINT_MISSING_TIMEZONE = "ENDPOINT_MISSING_TIMEZONE"
QUIET_TIME = "QUIET_TIME"
MAXIMUM_DURATION = "MAXIMUM_DURATION"


@dataclass(frozen=True, slots=True)
class Send:
    at: datetime


@dataclass(frozen=True, slots=True)
class Skip:
    reason: str


def plan(
    *,
    run: datetime,
    schedule: Schedule,
    quiet: QuietTime | None,
    endpoint_timezone: object,
    maximum_duration: int | None,
    now: datetime,
) -> Send | Skip:
    """When the message of `run` (for an EVENT campaign: the event's time) reaches an
    endpoint whose `Demographic.Timezone` is `endpoint_timezone`, as seen at `now`.

    `quiet` is the campaign's QuietTime, else the application's.
    """
    zone = endpoint_zone(endpoint_timezone)
    event = schedule.Frequency == "EVENT"
    due = run
    if schedule.IsLocalTime and not event:
        if zone is None:
            return Skip(ENDPOINT_MISSING_TIMEZONE)
        due = local_instant(run, schedule, zone)
    deadline = None if maximum_duration is None else due + timedelta(seconds=maximum_duration)
    if event:
        last = run + EVENT_DELIVERY_WINDOW
        deadline = last if deadline is None else min(deadline, last)
    at = max(due, now)
    if deadline is not None and at > deadline:
        return Skip(MAXIMUM_DURATION)
    held = quiet_until(quiet, at, zone)
    if held is not None:
        if deadline is not None and held > deadline:
            return Skip(QUIET_TIME)
        at = held
    return Send(at)
