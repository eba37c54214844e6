"""The SQL of the analytics queries (analytics/queries.py), on PostgreSQL: the functions
of storage/analytics_sqlite/queries.py.

Filters, breakdowns and funnels read the stored events of the range; with a collector's
columnar copy (storage/pg_columnar.py), those of its sealed days from its files, and the
rest from the events table: the days it has not sealed, and the tails of those it has.
Sums of bigint columns are numeric in PostgreSQL: they are cast back to bigint, so that
the answers hold ints as SQLite's do.

Ranges are in UTC hours [lo, hi) unless they say ms.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from homing_collector.storage import pg_columnar
from homing_collector.storage.analytics_pg import Connection, InTransaction, columns, rows, stream
from homing_collector.storage.analytics_pg.rollups import finite
from homing_collector.storage.events import HOUR_MS

if TYPE_CHECKING:
    from pathlib import Path

    from homing_collector.analytics.params import Step

# An event's body as JSON (stored as the bytes that were sent).
_JSON = "convert_from(e.body, 'UTF8')::jsonb"


def distinct_per_window(
    conn: Connection, app_id: str, kind: int, windows: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """(i, distinct subjects active) of each window i, [lo, hi) of UTC hours, from an_active."""
    return rows(
        conn,
        "SELECT w.i - 1, (SELECT count(DISTINCT key) FROM an_active WHERE app_id = %s"
        " AND kind = %s AND hour >= w.lo AND hour < w.hi)"
        " FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS w(lo, hi, i)",
        (app_id, kind, *columns(windows, 2)),
    )


def visits_by_day(
    conn: Connection, app_id: str, days: Sequence[tuple[int, int, int]]
) -> list[tuple[int, int, int]]:
    """(day, sessions, their total ms) of the (day, first hour, hour after) that have any."""
    return rows(
        conn,
        "SELECT d.i, sum(h.count)::bigint, sum(h.total_ms)::bigint"
        " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS d(i, lo, hi)"
        " JOIN an_visit_hours h ON h.app_id = %s AND h.hour >= d.lo AND h.hour < d.hi"
        " GROUP BY d.i",
        (*columns(days, 3), app_id),
    )


def visit_lengths_by_day(
    conn: Connection, app_id: str, days: Sequence[tuple[int, int, int]]
) -> list[tuple[int, int, int]]:
    """(day, length bucket, sessions) of the (day, first hour, hour after) given."""
    return rows(
        conn,
        "SELECT d.i, l.bucket, sum(l.count)::bigint"
        " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS d(i, lo, hi)"
        " JOIN an_visit_lengths l ON l.app_id = %s AND l.hour >= d.lo AND l.hour < d.hi"
        " GROUP BY d.i, l.bucket",
        (*columns(days, 3), app_id),
    )


def new_per_hour(
    conn: Connection, app_id: str, kind: int, lo: int, hi: int
) -> list[tuple[int, int]]:
    """(hour, subjects first active then) of the hours in [lo, hi) that have any."""
    return rows(
        conn,
        "SELECT first_hour, count(*) FROM an_subjects WHERE app_id = %s AND kind = %s"
        " AND first_hour >= %s AND first_hour < %s GROUP BY first_hour",
        (app_id, kind, lo, hi),
    )


def kept_retention(
    conn: Connection, app_id: str, kind: int, phase: int, first: int, after: int
) -> list[tuple[int, int, int]]:
    """(cohort, day offset, count) of the cohort days [first, after) of one phase, but 0s."""
    return rows(
        conn,
        "SELECT cohort, day_offset, count FROM an_retention WHERE app_id = %s AND kind = %s"
        " AND phase = %s AND cohort >= %s AND cohort < %s AND count <> 0",
        (app_id, kind, phase, first, after),
    )


def first_hours(
    conn: Connection, app_id: str, kind: int, lo: int, hi: int
) -> list[tuple[str, int]]:
    """(key, first hour) of the subjects first active in [lo, hi)."""
    return rows(
        conn,
        "SELECT key, first_hour FROM an_subjects WHERE app_id = %s AND kind = %s"
        " AND first_hour >= %s AND first_hour < %s",
        (app_id, kind, lo, hi),
    )


def later_hours(
    conn: Connection, app_id: str, kind: int, first: tuple[int, int],
    active: tuple[int, int],
) -> list[tuple[str, int]]:  # fmt: skip
    """(key, hour) of the hours in [`active`) of the subjects first active in [`first`)."""
    return rows(
        conn,
        "SELECT s.key, a.hour FROM an_subjects s JOIN an_active a ON a.app_id = s.app_id"
        " AND a.kind = s.kind AND a.key = s.key AND a.hour >= %s AND a.hour < %s"
        " WHERE s.app_id = %s AND s.kind = %s AND s.first_hour >= %s AND s.first_hour < %s",
        (*active, app_id, kind, *first),
    )


def endpoint_bodies(conn: Connection, app_id: str) -> list[tuple[str, str, str]]:
    """(endpoint id, user id, body) of every endpoint of the app."""
    return rows(
        conn, "SELECT endpoint_id, user_id, body FROM endpoints WHERE app_id = %s", (app_id,)
    )


def endpoint_users(conn: Connection, app_id: str) -> list[tuple[str, str]]:
    """(endpoint id, user id) of each endpoint of the app that has a user."""
    return rows(
        conn,
        "SELECT endpoint_id, user_id FROM endpoints WHERE app_id = %s AND user_id IS NOT NULL",
        (app_id,),
    )


def session_count(conn: Connection, app_id: str, lo: int, hi: int) -> int:
    found = rows(
        conn,
        "SELECT coalesce(sum(count), 0)::bigint FROM an_visit_hours WHERE app_id = %s"
        " AND hour >= %s AND hour < %s",
        (app_id, lo, hi),
    )
    return int(found[0][0])


def counts(
    conn: Connection, app_id: str, lo: int, hi: int, types: Sequence[str]
) -> list[tuple[int, str, int]]:
    """(hour, event type, count) from an_counts; of `types` if any are given."""
    return rows(
        conn,
        "SELECT hour, event_type, count FROM an_counts WHERE app_id = %s AND hour >= %s"
        " AND hour < %s" + (" AND event_type = ANY(%s)" if types else ""),
        (app_id, lo, hi, *([list(types)] if types else [])),
    )


def metrics(
    conn: Connection, app_id: str, lo: int, hi: int, types: Sequence[str]
) -> list[tuple[str, int, float, float, float]]:
    """(name, count, sum, min, max) per metric name over the range; of `types` if any."""
    return rows(
        conn,
        # Hours of +inf and -inf add up to NaN: 0, as analytics.rollups.add_sums has it.
        f"SELECT name, sum(count)::bigint, {finite('sum(sum)')}, min(min), max(max)"
        " FROM an_metrics WHERE app_id = %s AND hour >= %s AND hour < %s"
        + (" AND event_type = ANY(%s)" if types else "")
        + " GROUP BY name",
        (app_id, lo, hi, *([list(types)] if types else [])),
    )


def revenue(conn: Connection, app_id: str, lo: int, hi: int) -> list[tuple[int, str, int, float]]:
    """(hour, currency, purchases, amount) from an_revenue."""
    return rows(
        conn,
        "SELECT hour, currency, purchases, amount FROM an_revenue WHERE app_id = %s"
        " AND hour >= %s AND hour < %s",
        (app_id, lo, hi),
    )


def push_messages(
    conn: Connection, app_id: str, lo_ms: int, hi_ms: int
) -> list[tuple[str, str | None, int, int | None]]:
    """(endpoint id, campaign id, created_at, delivered_at) of messages queued in range."""
    return rows(
        conn,
        "SELECT endpoint_id, campaign_id, created_at, delivered_at FROM push_messages"
        " WHERE app_id = %s AND created_at >= %s AND created_at < %s",
        (app_id, lo_ms, hi_ms),
    )


def _in_range(columns_: str, types: Sequence[str]) -> str:
    """SELECT `columns_` (of `e`) of app %(app)s's events of hours [%(lo)s, %(hi)s) with
    %(lo_ms)s <= ts < %(hi_ms)s; of `types` if any (%(types)s). May go on with AND."""
    return (
        f"SELECT {columns_} FROM events e WHERE e.app_id = %(app)s AND e.hour >= %(lo)s"
        " AND e.hour < %(hi)s AND e.ts >= %(lo_ms)s AND e.ts < %(hi_ms)s" + _typed(types)
    )


def _typed(types: Sequence[str]) -> str:
    return " AND e.event_type = ANY(%(types)s)" if types else ""


def plan(conn: Connection, copy: Path, app_id: str, lo: int, hi: int) -> pg_columnar.Plan | None:
    """Where the events of hours [lo, hi) are read from (see storage/pg_columnar.py); None
    when the copy has none of them: then nothing of the copy is used, not even its
    directory (which may be missing, or not writable)."""
    assert not isinstance(conn, InTransaction)
    found = pg_columnar.plan(conn, pg_columnar.Copy(copy), app_id, lo, hi)
    return found if found.files else None


def numbering(conn: Connection, copy: Path, app_id: str) -> pg_columnar.Numbering:
    assert not isinstance(conn, InTransaction)
    return pg_columnar.Numbering(conn, pg_columnar.Copy(copy), app_id)


def _rows(
    conn: Connection,
    app_id: str,
    lo: int,
    hi: int,
    p: pg_columnar.Plan | None,
    columns_: str,
    types: Sequence[str],
    shape: Callable[[str], str],
    params: dict[str, Any],
) -> Iterator[Any]:
    """The rows of `columns_` of the events of hours [lo, hi) that the events table is to
    give: all of them without a plan, else those of the days the copy has not sealed and
    the tails of those it has. `shape` makes the query from the SELECT, which may go on
    with "AND ..."."""
    common = {**params, **_params(app_id, lo, hi, types)}
    for span_lo, span_hi in [(lo, hi)] if p is None else p.open:
        yield from stream(
            conn, shape(_in_range(columns_, types)), {**common, "lo": span_lo, "hi": span_hi}
        )
    if p is not None and p.tails:
        sql = pg_columnar.tail(columns_, _typed(types))
        yield from stream(conn, shape(sql), {**common, **pg_columnar.tail_params(p.tails)})


def _params(app_id: str, lo: int, hi: int, types: Sequence[str]) -> dict[str, Any]:
    return {"app": app_id, "lo": lo, "hi": hi, "lo_ms": lo * HOUR_MS, "hi_ms": hi * HOUR_MS,
            "types": list(types)}  # fmt: skip


def _all_of(tests: Sequence[str]) -> str:
    """SQL that is 1 when every test is true, and stops at the first false one."""
    if not tests:
        return "1"
    return (
        "(CASE" + "".join(f" WHEN NOT coalesce({t}, false) THEN 0" for t in tests) + " ELSE 1 END)"
    )


_PLAIN = re.compile(r"[ !#-.0-\[\]-~]*")


def _contains_any(name: str, values: Sequence[str], params: dict[str, Any]) -> str:
    """SQL that is true for every stored body holding one of `values` as a JSON string:
    the cheap test of storage/analytics_sqlite/queries.py's, on the stored bytes."""
    tests = []
    for i, value in enumerate(values):
        if not _PLAIN.fullmatch(value):
            return "true"
        params[f"{name}{i}"] = b'"' + value.encode() + b'"'
        tests.append(f"position(%({name}{i})s::bytea in e.body) > 0")
    return "(" + " OR ".join(tests) + ")" if tests else "false"


def scan_events(
    conn: Connection,
    app_id: str,
    lo: int,
    hi: int,
    p: pg_columnar.Plan | None,
    types: Sequence[str],
    include: Sequence[Sequence[str]],
) -> Iterator[tuple[str, int, bytes]]:
    """(event type, Timestamp, body) of the events of the range (see `_rows`) of `types`
    if any, and, for each of `include`, that may hold one of its values (the exact test is
    the caller's)."""
    params: dict[str, Any] = {}
    where = "".join(
        " AND " + _contains_any(f"i{k}_", values, params) for k, values in enumerate(include)
    )
    return _rows(
        conn, app_id, lo, hi, p, "e.event_type, e.ts, e.body", types,
        lambda sql: sql + where, params,
    )  # fmt: skip


def funnel_rows(
    conn: Connection,
    app_id: str,
    lo: int,
    hi: int,
    p: pg_columnar.Plan | None,
    steps: Sequence[Step],
) -> Iterator[tuple[str, int, int, int]]:
    """(endpoint id, Timestamp, steps matched as bits, number) of the events of the range
    (see `_rows`) that match a step, as a bit mask computed by the server: only the events
    that match one come back, without their bodies. Each has a number of its own, above
    those of the copy's files (see storage/pg_columnar.py)."""
    types = sorted({step.event_type for step in steps})
    params: dict[str, Any] = {}
    branches = []
    for t, event_type in enumerate(types):
        params[f"t{t}"] = event_type
        bits = []
        for k, step in enumerate(steps):
            if step.event_type != event_type:
                continue
            tests = []
            for a, (name, value) in enumerate(step.attributes):
                tests.append(_contains_any(f"s{k}_{a}_", [value], params))
                params[f"n{k}_{a}"], params[f"v{k}_{a}"] = name, value
                tests.append(f"({_JSON} -> 'Attributes' ->> %(n{k}_{a})s) = %(v{k}_{a})s")
            bits.append(f"({_all_of(tests)} << {k})")
        branches.append(f" WHEN %(t{t})s THEN {' | '.join(bits)}")
    mask = f"CASE e.event_type{''.join(branches)} ELSE 0 END"
    found = _rows(
        conn, app_id, lo, hi, p, f"e.endpoint_id, e.ts, {mask} AS m", types,
        lambda sql: f"SELECT endpoint_id, ts, m FROM ({sql}) AS f WHERE m <> 0", params,
    )  # fmt: skip
    # Numbers rather than positions: the walk (storage/columnar.py's _walk_asof) keeps
    # 48 bits of each, and a position has more once the server has run 2**28 transactions.
    return (
        (endpoint_id, ts, m, pg_columnar.ROW_NUMBERS + i)
        for i, (endpoint_id, ts, m) in enumerate(found)
    )
