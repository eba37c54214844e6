"""Quotas: how many requests and events per second one key, and one application, may send.

An ingest key ships inside every copy of an app, so a leaked one must not be able to
flood the collector and starve every other application. Past a quota the answer is 429
`TooManyRequestsException` with `Retry-After`, which the SDK and boto3 honour.

Each counter follows the generic cell rate algorithm: it keeps one time, when it would
be empty again. A request of `cost` pushes that time `cost / rate` seconds later, and is
refused if it would then be more than a second of traffic ahead of now. A counter thus
lets through a burst of one second's worth, then the rate; a single request bigger than
a second's worth passes when the counter is empty, so that it is never refused forever.

The counters live in an anonymous shared mapping made before `serve --workers` forks,
ordered by a lock made then too, so that the workers share one quota.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import multiprocessing
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

BURST_SECONDS = 1.0
MAX_QUOTA = 1_000_000_000
# An application's own quotas, by their names in the API, and the Rates field each sets.
NAMES = {
    "KeyRequestsPerSecond": "key_requests",
    "KeyEventsPerSecond": "key_events",
    "RequestsPerSecond": "app_requests",
    "EventsPerSecond": "app_events",
}
# How long a worker keeps an application's own quotas before it reads them again: a
# change made through another worker takes effect within this.
OWN_TTL_SECONDS = 2.0
_SLOTS = 8192
_PROBES = 8
_SLOT = struct.Struct("<Qdd")  # tag (0: free), when the requests and the events counters empty
_IDLE_SECONDS = 60.0  # a slot idle this long may go to another counter


@dataclass(frozen=True)
class Rates:
    """Per second; each key of an application, and the application as a whole."""

    key_requests: int
    key_events: int
    app_requests: int
    app_events: int


@dataclass(frozen=True)
class Refusal:
    """Which quota a request is over, and when to retry."""

    subject: str  # "key hm_..." or "application ..."
    what: str  # "requests" or "events"
    rate: int
    retry_after: float  # seconds

    @property
    def message(self) -> str:
        return (
            f"The {self.subject} is over its quota of {self.rate:,} {self.what} per second; "
            f"retry after {math.ceil(self.retry_after)} s"
        )


class Counters:
    """The counters, shared by every worker forked after this is made."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._map = mmap.mmap(-1, _SLOTS * _SLOT.size)
        self._lock = multiprocessing.Lock()
        self._clock = clock
        self.unplaced = 0  # takes let through because no slot was free (counted in /metrics)

    def take(self, counters: list[tuple[str, int, str]], index: int, cost: int) -> Refusal | None:
        """Charge `cost` to each (subject, rate, what) counter, all or none: index 0 is
        the requests counter, 1 the events one. Returns the first refusal, if any."""
        now = self._clock()
        with self._lock:
            charged: list[tuple[int, float]] = []
            for subject, rate, what in counters:
                offset = self._slot(subject, now)
                if offset is None:
                    self.unplaced += 1
                    continue
                step = cost / rate
                empty_at = max(_SLOT.unpack_from(self._map, offset)[1 + index], now) + step
                over = empty_at - now - max(BURST_SECONDS, step)
                if over > 1e-9:  # not a rounding error of the steps added up
                    return Refusal(subject, what, rate, over)
                charged.append((offset, empty_at))
            for offset, empty_at in charged:
                tag, *values = _SLOT.unpack_from(self._map, offset)
                values[index] = empty_at
                _SLOT.pack_into(self._map, offset, tag, *values)
        return None

    def _slot(self, subject: str, now: float) -> int | None:
        digest = hashlib.blake2b(subject.encode(), digest_size=8).digest()
        tag = int.from_bytes(digest, "little") or 1
        for probe in range(_PROBES):
            offset = ((tag + probe) % _SLOTS) * _SLOT.size
            held, requests, events = _SLOT.unpack_from(self._map, offset)
            if held == tag:
                return offset
            if held == 0 or max(requests, events) < now - _IDLE_SECONDS:
                _SLOT.pack_into(self._map, offset, tag, 0.0, 0.0)
                return offset
        return None


class Quotas:
    """The quotas of each key and application: the server's defaults, and those an
    application sets for itself, kept for OWN_TTL_SECONDS."""

    def __init__(
        self,
        defaults: Rates,
        counters: Counters | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.defaults = defaults
        self.counters = counters or Counters()
        self._clock = clock
        self._own: dict[str, tuple[float, Rates]] = {}  # app id -> (kept until, rates)

    def cached(self, app_id: str) -> Rates | None:
        """The application's quotas, if read less than OWN_TTL_SECONDS ago."""
        entry = self._own.get(app_id)
        return entry[1] if entry is not None and entry[0] > self._clock() else None

    def remember(self, app_id: str, own: dict[str, int]) -> Rates:
        """The application's quotas, given those it sets (by their API names)."""
        rates = replace(self.defaults, **{NAMES[name]: value for name, value in own.items()})
        self._own[app_id] = (self._clock() + OWN_TTL_SECONDS, rates)
        return rates

    def requests(self, rates: Rates, key_id: str, app_id: str | None) -> Refusal | None:
        return self.counters.take(self._subjects(rates, key_id, app_id, "requests"), 0, 1)

    def events(self, rates: Rates, key_id: str, app_id: str, count: int) -> Refusal | None:
        if count <= 0:
            return None
        return self.counters.take(self._subjects(rates, key_id, app_id, "events"), 1, count)

    @staticmethod
    def _subjects(
        rates: Rates, key_id: str, app_id: str | None, what: str
    ) -> list[tuple[str, int, str]]:
        requests = what == "requests"
        subjects = [(f"key {key_id}", rates.key_requests if requests else rates.key_events, what)]
        if app_id is not None:
            app_rate = rates.app_requests if requests else rates.app_events
            subjects.append((f"application {app_id}", app_rate, what))
        return subjects
