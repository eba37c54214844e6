"""When to try a webhook delivery again, and when to give up on it.

Attempt n (n = 1 after the first failure) waits `first_delay * factor ** (n - 1)`, capped
at `max_delay`, with a random jitter of +- `jitter` of it, so that receivers coming back
after an outage are not hit by every sender at the same second. A `Retry-After` asking
for longer is honoured. A retry that would fall more than `budget` after the first
attempt is not made: the delivery is dead-lettered instead.

With the defaults the retries fall about 5 s, 10 s, 20 s, ... after each failure, then
every 2 h, for 24 h: about 20 attempts in all.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: float = 5.0
    factor: float = 2.0
    max_delay: float = 2 * 3600.0
    budget: float = 24 * 3600.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.first_delay <= self.max_delay <= self.budget:
            raise ValueError("RetryPolicy: needs 0 < first_delay <= max_delay <= budget")
        if self.factor < 1:
            raise ValueError("RetryPolicy.factor: must be 1 or more")
        if not 0 <= self.jitter < 1:
            raise ValueError("RetryPolicy.jitter: must be from 0 up to (not including) 1")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before retry number `retry` (1 for the first retry), jittered."""
        if retry < 1:
            raise ValueError(f"retry: counts from 1, not {retry}")
        # min() before the power could overflow: 2.0 ** 2000 is inf, and inf * 0 is nan.
        base = self.first_delay * self.factor ** min(retry - 1, 64)
        base = min(base, self.max_delay)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return base * (1 + spread)

    def next_attempt(
        self,
        *,
        retry: int,
        first_attempt_at: float,
        now: float,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """When to make retry number `retry`, in the clock's seconds; None to dead-letter."""
        wait = self.delay(retry, rng)
        if retry_after is not None:
            wait = max(wait, retry_after)  # never sooner than the receiver asked
        at = now + wait
        if at - first_attempt_at > self.budget:
            return None
        return at


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP-date.

    >>> parse_retry_after("120", 0.0)
    120.0
    >>> parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", 30.0)
    30.0
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None  # unreadable: the policy's own schedule applies
    if moment.tzinfo is None:
        return None  # RFC 9110 dates are in GMT; one without a zone is not one of them
    return max(0.0, moment.timestamp() - now)
