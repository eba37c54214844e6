"""Type aliases and the small value objects the public API returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Attributes", "Clock", "Event", "FlushResult", "Metrics", "Stats"]

Event = dict[str, Any]
Attributes = Mapping[str, str]
Metrics = Mapping[str, float]
Clock = Callable[[], float]


@dataclass(frozen=True)
class FlushResult:
    """What one `Analytics.flush()` did.

    Example::

        result = analytics.flush(timeout=5)
        if result.remaining:
            print("still queued:", result.remaining, result.error)
    """

    sent: int = 0
    rejected: int = 0
    remaining: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Stats:
    """Counters since this `Analytics` was created; `queued` is what the store holds now.

    Example::

        stats = analytics.stats()
        print(stats.queued, stats.sent, stats.dropped.get("storage_full", 0))
    """

    queued: int = 0
    sent: int = 0
    rejected: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
