"""Campaign limits as arithmetic over counters: the per-endpoint caps and the send rate.

Pinpoint (botocore `pinpoint` 2016-12-01, CampaignLimits): `Daily` caps the messages a
campaign sends one endpoint in 24 hours, `Total` over the campaign's life (every run of
a recurring one), `Session` per user session, and `MessagesPerSecond` the campaign's send
rate; the application's limits are the defaults a campaign's own override. The user
guide (settings-general) counts *targeted* messages against `Total`, so a send counts
when it is attempted, delivered or not.

Homing's decisions: 0 is no cap, as in the console's in-app caps; the 24 hours are the
ones before `now`, a sliding window, not a calendar day; the session is the triggering
event's `Session.Id`, so only event-triggered messages are in one. The skip reasons DAILY_CAP,
TOTAL_CAP and SESSION_CAP are Homing's ExecutionMetrics names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import msgspec

from .campaign_shapes import CampaignLimits

DAY = timedelta(hours=24)


def effective_limits(campaign: CampaignLimits | None, app: CampaignLimits | None) -> CampaignLimits:
    """The campaign's limits, each member it leaves unset taken from the application's."""
    if app is None:
        return campaign or CampaignLimits()
    if campaign is None:
        return app
    given = {k: v for k, v in msgspec.structs.asdict(campaign).items() if v is not None}
    return msgspec.structs.replace(app, **given)


def sent_in_last_day(sends: Iterable[datetime], now: datetime) -> int:
    """How many of an endpoint's sends fall in the 24 hours up to `now`."""
    since = now - DAY
    return sum(1 for at in sends if since < at <= now)


def cap_reason(
    limits: CampaignLimits, *, last_day: int, total: int, in_session: int | None = None
) -> str | None:
    """Why one more message to an endpoint would break a cap, or None when it may go.

    `last_day` and `total` count the campaign's earlier sends to the endpoint;
    `in_session` those in its current session (None: not in a session).
    """
    if limits.Total and total >= limits.Total:
        return "TOTAL_CAP"
    if limits.Daily and last_day >= limits.Daily:
        return "DAILY_CAP"
    if limits.Session and in_session is not None and in_session >= limits.Session:
        return "SESSION_CAP"
    return None


class TokenBucket:
    """`MessagesPerSecond` as a token bucket: `rate` tokens a second, up to `burst` saved.

    >>> now = [0.0]
    >>> bucket = TokenBucket(2, clock=lambda: now[0])
    >>> bucket.take(), bucket.take(), bucket.take()
    (0.0, 0.0, 0.5)
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate: must be more than 0 messages a second")
        self.rate = rate
        # One second's worth by default: a run never sends faster than the cap over any second.
        self.burst = rate if burst is None else burst
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def take(self, count: float = 1) -> float:
        """Take `count` tokens; return how long to wait, in seconds, before sending them.
        The tokens are spent even when the caller must wait, so callers queue fairly."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= count
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def try_take(self, count: float = 1) -> bool:
        """Take `count` tokens if they are there now; False leaves the bucket as it was."""
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens < count:
            self._tokens = tokens
            return False
        self._tokens = tokens - count
        return True
