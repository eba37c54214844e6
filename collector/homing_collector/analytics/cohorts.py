"""Retention kept at ingest, for every whole-hour zone whose offset does not change.

A zone with a fixed offset starts its days at UTC hours of one phase p (0 to 23): day
d holds the hours [24 d + p, 24 d + p + 24). For each phase, an_retention counts, per
cohort day c (the day of a subject's first hour) and offset k from 1 to 30, the subjects
active on day c + k; and, stored with offset -k, those whose first day back is c + k.
A query in a zone whose offset changes (daylight saving time) within the cohorts' 30 days
reads an_active instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from homing_collector.storage.analytics_backend import Connection, statements

PHASES = range(24)
DAYS = 30
HORIZON = (DAYS + 2) * 24  # hours after the first one that can matter

Deltas = dict[tuple[str, int, int, int, int], int]  # (app, kind, phase, cohort, offset)


def offsets(cohort: int, days: Iterable[int]) -> set[int]:
    """The offsets k (1 to DAYS) of the days after day `cohort` that are among `days`."""
    return {k for k in (day - cohort for day in days) if 1 <= k <= DAYS}


def _bump(deltas: Deltas, key: tuple[str, int, int, int, int], by: int) -> None:
    deltas[key] = deltas.get(key, 0) + by


def add_all(
    deltas: Deltas, app_id: str, kind: int, first: int, hours: Iterable[int], sign: int
) -> None:
    """Add (sign 1) or take away (-1) everything a subject first active at hour `first`
    with these active hours contributes."""
    gaps = [h - first for h in hours if first < h <= first + HORIZON]
    if not gaps:
        return  # active in its first hour only, as most new subjects are: no day after
    # This runs for every new subject a fold or a batch brings: `offsets` and `_bump`
    # written out. With r = (first - p) % 24, an hour `gap` hours after the first is on
    # day (r + gap) // 24 after the cohort's, in phase p: only the phases whose r is at
    # least 24 - the longest gap see a day after the first one (a subject active in two
    # hours in a row: one phase).
    get = deltas.get
    for r in range(max(0, 24 - max(gaps)), 24):
        p = (first - r) % 24
        c = (first - p) // 24
        after = {k for k in [(r + gap) // 24 for gap in gaps] if 1 <= k <= DAYS}
        if after:
            for k in after:
                key = (app_id, kind, p, c, k)
                deltas[key] = get(key, 0) + sign
            key = (app_id, kind, p, c, -min(after))
            deltas[key] = get(key, 0) + sign


def add_hour(
    deltas: Deltas, app_id: str, kind: int, first: int, h: int, below: int | None,
    above: int | None,
) -> None:  # fmt: skip
    """Hour h becomes active for a subject first active at `first` (unchanged), whose
    nearest active hours are `below` and `above` h."""
    if h - first > HORIZON:
        return
    for p in PHASES:
        c = (first - p) // 24
        d = (h - p) // 24
        k = d - c
        if k < 1 or k > DAYS:
            continue
        start = 24 * d + p
        if not (
            (below is not None and below >= start) or (above is not None and above < start + 24)
        ):
            _bump(deltas, (app_id, kind, p, c, k), 1)
        if below is None or below < 24 * (c + 1) + p:
            # h is now the first hour after the cohort day; the day back may move earlier.
            old = (above - p) // 24 - c if above is not None else None
            if old != k:
                if old is not None and old <= DAYS:
                    _bump(deltas, (app_id, kind, p, c, -old), -1)
                _bump(deltas, (app_id, kind, p, c, -k), 1)


def write(conn: Connection, deltas: Deltas) -> None:
    changed = [(*key, delta) for key, delta in deltas.items() if delta]
    if changed:
        statements(conn).cohorts.add_counts(conn, changed)
