"""Distinct counts over sliding windows of hours, kept as coverage deltas.

A subject (an endpoint or a user) active in hour h is counted by every window of L hours
that starts in [h - L + 1, h]. Over all its active hours, the window starts that count it
form a union of runs; the rollup keeps, per window length L, +1 where a run begins and -1
after it ends. The number of subjects active in the window [a, a + L) is then the sum of
the deltas up to a: one indexed read, however many subjects and events there are.

Window lengths are those of 1, 7 and 30 local days in any zone with a whole-hour offset:
24 hours per day, one more or one fewer across a daylight-saving change. Any other window
is counted from an_active directly.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from homing_collector.storage.analytics_backend import Connection, statements

DAY_SPANS = (1, 7, 30)
SPANS = tuple(sorted(days * 24 + shift for days in DAY_SPANS for shift in (-1, 0, 1)))
MAX_SPAN = max(SPANS)

Deltas = dict[tuple[str, int, int, int], int]  # (app, kind, span, hour) -> delta


def add_hour(deltas: Deltas, app_id: str, kind: int, h: int, p: int | None, n: int | None) -> None:
    """Hour h becomes active; p and n are the nearest active hours before and after it."""
    for span in SPANS:
        lo = h - span + 1
        if p is not None and p >= lo:
            lo = p + 1
        hi = h
        if n is not None and n - span < hi:
            hi = n - span
        if lo <= hi:
            key = (app_id, kind, span, lo)
            deltas[key] = deltas.get(key, 0) + 1
            key = (app_id, kind, span, hi + 1)
            deltas[key] = deltas.get(key, 0) - 1


def add_all(deltas: Deltas, app_id: str, kind: int, hours: Sequence[int], sign: int) -> None:
    """Add (sign 1) or take away (sign -1) a subject's whole coverage; `hours` sorted."""
    for span in SPANS:
        run_lo = run_hi = None
        for h in hours:
            lo = h - span + 1
            if run_hi is not None and lo <= run_hi + 1:
                run_hi = h
                continue
            if run_lo is not None and run_hi is not None:
                _run(deltas, (app_id, kind, span), run_lo, run_hi, sign)
            run_lo, run_hi = lo, h
        if run_lo is not None and run_hi is not None:
            _run(deltas, (app_id, kind, span), run_lo, run_hi, sign)


def _run(deltas: Deltas, base: tuple[str, int, int], lo: int, hi: int, sign: int) -> None:
    key = (*base, lo)
    deltas[key] = deltas.get(key, 0) + sign
    key = (*base, hi + 1)
    deltas[key] = deltas.get(key, 0) - sign


def add_new_hours(
    deltas: Deltas,
    app_id: str,
    kind: int,
    hours: Iterable[int],
    known: list[int],
) -> list[tuple[int, int | None, int | None]]:
    """Add `hours` (ascending) to a subject whose active hours near them are `known`
    (sorted, changed in place); hours already known add nothing. Returns each new hour
    with its nearest active hours below and above, as they were when it was added."""
    added = []
    for h in hours:
        i = bisect.bisect_left(known, h)
        if i < len(known) and known[i] == h:
            continue
        p = known[i - 1] if i > 0 else None
        n = known[i] if i < len(known) else None
        add_hour(deltas, app_id, kind, h, p, n)
        known.insert(i, h)
        added.append((h, p, n))
    return added


def write(conn: Connection, deltas: Deltas) -> None:
    changed = [(*key, delta) for key, delta in deltas.items() if delta]
    if changed:
        statements(conn).cover.add_deltas(conn, changed)


def counts(
    conn: Connection, app_id: str, kind: int, windows: Sequence[tuple[int, int]]
) -> list[int | None]:
    """Distinct subjects active in each window [start, start + span) of hours; None for a
    span that is not kept (the caller counts those another way)."""
    result: list[int | None] = [None] * len(windows)
    by_span: dict[int, list[int]] = {}
    for i, (_start, span) in enumerate(windows):
        if span in SPANS:
            by_span.setdefault(span, []).append(i)
    for span, indexes in by_span.items():
        last = max(windows[i][0] for i in indexes)
        hours: list[int] = []
        sums: list[int] = []
        total = 0
        for hour, delta in statements(conn).cover.deltas_up_to(conn, app_id, kind, span, last):
            total += delta
            hours.append(hour)
            sums.append(total)
        for i in indexes:
            at = bisect.bisect_right(hours, windows[i][0])
            result[i] = sums[at - 1] if at else 0
    return result
