"""Sessions after the 5-second rule, kept at ingest with per-hour counts and lengths.

The sessions of one endpoint, taken in order of their start, chain together when one
starts 5 seconds or less after the stop of the chain so far: the chains are the connected
runs of the intervals [start, stop + 5 s]. an_visits holds the chains (a chain is what the
analytics call a session), and per UTC hour of their start, an_visit_hours their number
and total length and an_visit_lengths a histogram of their lengths, for the median.

When events add to a session, the chains of that endpoint that start from 2 days before to
just after it are read back, merged with it again, and the difference is written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from homing_collector.analytics.days import HOUR_MS
from homing_collector.storage.analytics_backend import Connection, statements

GAP_MS = 5000
LOOKBACK_MS = 2 * 86_400_000
GROWTH = 1.05  # histogram buckets are 5% wide: a median is within 2.5% of the exact one
_LOG_GROWTH = math.log(GROWTH)

Spans = dict[tuple[str, str, str], list[int]]  # (app, endpoint, session id) -> [start, stop]
Chain = tuple[int, int]


def bucket(length_ms: int) -> int:
    return int(math.log1p(max(length_ms, 0) / 1000) / _LOG_GROWTH)


def bucket_seconds(index: int) -> float:
    """The middle of a bucket, in seconds."""
    return (GROWTH**index + GROWTH ** (index + 1)) / 2 - 1


def chains(intervals: Iterable[Chain]) -> list[Chain]:
    out: list[list[int]] = []
    for start, stop in sorted(intervals):
        stop = max(start, stop)  # an interval never ends before it starts
        if out and start <= out[-1][1] + GAP_MS:
            if stop > out[-1][1]:
                out[-1][1] = stop
        else:
            out.append([start, stop])
    return [(a, b) for a, b in out]


class Stats:
    """Changes to the per-hour figures."""

    def __init__(self) -> None:
        self.hours: dict[tuple[str, int], list[int]] = {}  # (app, hour) -> [count, total ms]
        self.lengths: dict[tuple[str, int, int], int] = {}  # (app, hour, bucket) -> count

    def add(self, app_id: str, chain: Chain, sign: int) -> None:
        start, stop = chain
        hour = start // HOUR_MS
        got = self.hours.setdefault((app_id, hour), [0, 0])
        got[0] += sign
        got[1] += sign * (stop - start)
        key = (app_id, hour, bucket(stop - start))
        self.lengths[key] = self.lengths.get(key, 0) + sign

    def write(self, conn: Connection) -> None:
        statements(conn).visits.add_stats(
            conn,
            [(*key, c, t) for key, (c, t) in self.hours.items() if c or t],
            [(*key, c) for key, c in self.lengths.items() if c],
        )


def update(conn: Connection, spans: Spans) -> None:
    """Merge the sessions that events just added to (their spans in this batch)."""
    per: dict[tuple[str, str], list[Chain]] = {}
    for (app_id, endpoint_id, _sid), (start, stop) in spans.items():
        per.setdefault((app_id, endpoint_id), []).append((start, stop))
    existing: dict[tuple[str, str], list[Chain]] = {key: [] for key in per}
    ranges = [
        (*key, min(a for a, _ in intervals) - LOOKBACK_MS, max(b for _, b in intervals) + GAP_MS)
        for key, intervals in per.items()
    ]
    for app_id, endpoint_id, start, stop in statements(conn).visits.chains_near(conn, ranges):
        existing[(app_id, endpoint_id)].append((start, stop))
    stats = Stats()
    removed: list[tuple[str, str, int]] = []
    added: list[tuple[str, str, int, int]] = []
    for key, intervals in per.items():
        old = set(existing[key])
        new = set(chains([*old, *intervals]))
        for chain in old - new:
            removed.append((*key, chain[0]))
            stats.add(key[0], chain, -1)
        for chain in new - old:
            added.append((*key, *chain))
            stats.add(key[0], chain, 1)
    statements(conn).visits.replace_chains(conn, removed, added)
    stats.write(conn)


def remove_endpoint(conn: Connection, app_id: str, endpoint_id: str) -> None:
    stats = Stats()
    for start, stop in statements(conn).visits.remove_endpoint(conn, app_id, endpoint_id):
        stats.add(app_id, (start, stop), -1)
    stats.write(conn)


def median(histogram: dict[int, int]) -> float | None:
    """The median length in seconds from bucket -> count."""
    total = sum(histogram.values())
    if not total:
        return None
    wanted = [(total - 1) // 2, total // 2]  # 0-based ranks of the middle one or two
    found: list[float] = []
    seen = 0
    for index in sorted(histogram):
        count = histogram[index]
        while wanted and wanted[0] < seen + count:
            found.append(bucket_seconds(index))
            wanted.pop(0)
        seen += count
    return round(sum(found) / len(found), 3)
