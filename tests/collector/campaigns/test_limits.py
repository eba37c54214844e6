"""Campaign limits: inheritance from the app, the caps, and the rate limiter on a fake clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from homing_collector.campaigns.campaign_shapes import CampaignLimits
from homing_collector.campaigns.limits import (
    TokenBucket,
    cap_reason,
    effective_limits,
    sent_in_last_day,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def test_campaign_limits_override_the_apps_member_by_member() -> None:
    app = CampaignLimits(Daily=2, Total=10, MessagesPerSecond=100)
    campaign = CampaignLimits(Daily=5, MaximumDuration=600)
    assert effective_limits(campaign, app) == CampaignLimits(
        Daily=5, Total=10, MessagesPerSecond=100, MaximumDuration=600
    )
    assert effective_limits(None, app) == app
    assert effective_limits(campaign, None) == campaign
    assert effective_limits(None, None) == CampaignLimits()


def test_the_last_day_slides() -> None:
    sends = [NOW - timedelta(hours=h) for h in (0, 1, 23.99, 24, 30)]
    assert sent_in_last_day(sends, NOW) == 3
    assert sent_in_last_day(sends, NOW + timedelta(hours=1)) == 2


@pytest.mark.parametrize(
    ("limits", "last_day", "total", "in_session", "reason"),
    [
        (CampaignLimits(Daily=2), 1, 5, None, None),
        (CampaignLimits(Daily=2), 2, 5, None, "DAILY_CAP"),
        (CampaignLimits(Total=5), 0, 5, None, "TOTAL_CAP"),
        (CampaignLimits(Total=5, Daily=1), 1, 5, None, "TOTAL_CAP"),
        (CampaignLimits(Session=1), 0, 0, 1, "SESSION_CAP"),
        (CampaignLimits(Session=1), 0, 0, None, None),
        (CampaignLimits(Daily=0, Total=0), 99, 99, None, None),  # 0 is no cap
        (CampaignLimits(), 99, 99, 99, None),
    ],
)
def test_caps(
    limits: CampaignLimits, last_day: int, total: int, in_session: int | None, reason: str | None
) -> None:
    assert cap_reason(limits, last_day=last_day, total=total, in_session=in_session) == reason


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_holds_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10, clock=clock)
    waits = [bucket.take() for _ in range(30)]
    assert waits[:10] == [0.0] * 10  # one second's worth at once
    assert waits[10:] == pytest.approx([0.1 * i for i in range(1, 21)])  # then 10 a second
    clock.now += 2.0  # the queue drains, the bucket stays empty
    assert bucket.take() == pytest.approx(0.1)


def test_try_take_does_not_spend_what_is_not_there() -> None:
    clock = Clock()
    bucket = TokenBucket(1, burst=2, clock=clock)
    assert bucket.try_take() and bucket.try_take()
    assert not bucket.try_take()
    clock.now += 0.5
    assert not bucket.try_take()
    clock.now += 0.5
    assert bucket.try_take()
    clock.now += 10
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]  # burst caps the saving


def test_a_zero_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0)
