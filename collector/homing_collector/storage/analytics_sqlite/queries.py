"""The SQL of the analytics queries (analytics/queries.py): reads of the rollups, of
the endpoints, and of the stored events of a range for filters, breakdowns and funnels.

Ranges are in UTC hours [lo, hi) unless they say ms.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from homing_collector.storage import columnar
from homing_collector.storage import events as events_sql
from homing_collector.storage.events import HOUR_MS

if TYPE_CHECKING:
    from pathlib import Path

    from homing_collector.analytics.params import Step


def distinct_per_window(
    conn: sqlite3.Connection, app_id: str, kind: int, windows: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """(i, distinct subjects active) of each window i, [lo, hi) of UTC hours, from an_active."""
    values = ",".join("(?, ?, ?)" for _ in windows)
    params: list[Any] = [x for i, (lo, hi) in enumerate(windows) for x in (i, lo, hi)]
    return conn.execute(
        f"WITH w(i, lo, hi) AS (VALUES {values}) SELECT i, (SELECT count(DISTINCT key)"
        " FROM an_active WHERE app_id = ? AND kind = ? AND hour >= w.lo AND hour < w.hi)"
        " FROM w",
        (*params, app_id, kind),
    ).fetchall()


def _days_cte(days: Sequence[tuple[int, int, int]]) -> tuple[str, list[int]]:
    """A CTE d(i, lo, hi) of the (day, first hour, hour after) given."""
    values = ",".join("(?, ?, ?)" for _ in days)
    return f"d(i, lo, hi) AS (VALUES {values})", [x for day in days for x in day]


def visits_by_day(
    conn: sqlite3.Connection, app_id: str, days: Sequence[tuple[int, int, int]]
) -> Iterator[tuple[int, int, int]]:
    """(day, sessions, their total ms) of the (day, first hour, hour after) that have any."""
    cte, params = _days_cte(days)
    return conn.execute(
        f"WITH {cte} SELECT d.i, sum(h.count), sum(h.total_ms) FROM d JOIN an_visit_hours h"
        " ON h.app_id = ? AND h.hour >= d.lo AND h.hour < d.hi GROUP BY d.i",
        (*params, app_id),
    )


def visit_lengths_by_day(
    conn: sqlite3.Connection, app_id: str, days: Sequence[tuple[int, int, int]]
) -> Iterator[tuple[int, int, int]]:
    """(day, length bucket, sessions) of the (day, first hour, hour after) given."""
    cte, params = _days_cte(days)
    return conn.execute(
        f"WITH {cte} SELECT d.i, l.bucket, sum(l.count) FROM d JOIN an_visit_lengths l"
        " ON l.app_id = ? AND l.hour >= d.lo AND l.hour < d.hi GROUP BY d.i, l.bucket",
        (*params, app_id),
    )


def new_per_hour(
    conn: sqlite3.Connection, app_id: str, kind: int, lo: int, hi: int
) -> Iterator[tuple[int, int]]:
    """(hour, subjects first active then) of the hours in [lo, hi) that have any."""
    return conn.execute(
        "SELECT first_hour, count(*) FROM an_subjects WHERE app_id = ? AND kind = ?"
        " AND first_hour >= ? AND first_hour < ? GROUP BY first_hour",
        (app_id, kind, lo, hi),
    )


def kept_retention(
    conn: sqlite3.Connection, app_id: str, kind: int, phase: int, first: int, after: int
) -> Iterator[tuple[int, int, int]]:
    """(cohort, day offset, count) of the cohort days [first, after) of one phase, but 0s."""
    return conn.execute(
        "SELECT cohort, day_offset, count FROM an_retention WHERE app_id = ? AND kind = ?"
        " AND phase = ? AND cohort >= ? AND cohort < ? AND count != 0",
        (app_id, kind, phase, first, after),
    )


def first_hours(
    conn: sqlite3.Connection, app_id: str, kind: int, lo: int, hi: int
) -> Iterator[tuple[str, int]]:
    """(key, first hour) of the subjects first active in [lo, hi)."""
    return conn.execute(
        "SELECT key, first_hour FROM an_subjects WHERE app_id = ? AND kind = ?"
        " AND first_hour >= ? AND first_hour < ?",
        (app_id, kind, lo, hi),
    )


def later_hours(
    conn: sqlite3.Connection, app_id: str, kind: int, first: tuple[int, int],
    active: tuple[int, int],
) -> Iterator[tuple[str, int]]:  # fmt: skip
    """(key, hour) of the hours in [`active`) of the subjects first active in [`first`)."""
    return conn.execute(
        "SELECT s.key, a.hour FROM an_subjects s JOIN an_active a ON a.app_id = s.app_id"
        " AND a.kind = s.kind AND a.key = s.key AND a.hour >= ? AND a.hour < ?"
        " WHERE s.app_id = ? AND s.kind = ? AND s.first_hour >= ? AND s.first_hour < ?",
        (*active, app_id, kind, *first),
    )


def endpoint_bodies(conn: sqlite3.Connection, app_id: str) -> Iterator[tuple[str, str, bytes]]:
    """(endpoint id, user id, body) of every endpoint of the app."""
    return conn.execute(
        "SELECT endpoint_id, user_id, body FROM endpoints WHERE app_id = ?", (app_id,)
    )


def endpoint_users(conn: sqlite3.Connection, app_id: str) -> Iterator[tuple[str, str]]:
    """(endpoint id, user id) of each endpoint of the app that has a user, from the index
    of users alone."""
    return conn.execute(
        "SELECT endpoint_id, user_id FROM endpoints WHERE app_id = ? AND user_id IS NOT NULL",
        (app_id,),
    )


def plan(conn: sqlite3.Connection, copy: Path, app_id: str, lo: int, hi: int) -> columnar.Plan:
    """Where the events of hours [lo, hi) are read from (see storage/columnar.py)."""
    return columnar.plan(conn, copy, app_id, lo, hi)


def numbering(conn: sqlite3.Connection, copy: Path, app_id: str) -> columnar.Numbering:
    """The copy's endpoint numbers, as the files of `copy` hold them."""
    return columnar.Numbering(conn, app_id)


def session_count(conn: sqlite3.Connection, app_id: str, lo: int, hi: int) -> int:
    (count,) = conn.execute(
        "SELECT coalesce(sum(count), 0) FROM an_visit_hours WHERE app_id = ? AND hour >= ?"
        " AND hour < ?",
        (app_id, lo, hi),
    ).fetchone()
    return int(count)


def _type_clause(types: Sequence[str]) -> tuple[str, list[str]]:
    if not types:
        return "", []
    return f" AND event_type IN ({','.join('?' * len(types))})", list(types)


def counts(
    conn: sqlite3.Connection, app_id: str, lo: int, hi: int, types: Sequence[str]
) -> Iterator[tuple[int, str, int]]:
    """(hour, event type, count) from an_counts; of `types` if any are given."""
    clause, typed = _type_clause(types)
    return conn.execute(
        "SELECT hour, event_type, count FROM an_counts WHERE app_id = ? AND hour >= ?"
        " AND hour < ?" + clause,
        (app_id, lo, hi, *typed),
    )


def metrics(
    conn: sqlite3.Connection, app_id: str, lo: int, hi: int, types: Sequence[str]
) -> Iterator[tuple[str, int, float, float, float]]:
    """(name, count, sum, min, max) per metric name over the range; of `types` if any."""
    clause, typed = _type_clause(types)
    return conn.execute(
        # Hours of +inf and -inf add up to NULL: 0, as analytics.rollups.add_sums has it.
        "SELECT name, sum(count), coalesce(sum(sum), 0), min(min), max(max) FROM an_metrics"
        " WHERE app_id = ? AND hour >= ? AND hour < ?" + clause + " GROUP BY name",
        (app_id, lo, hi, *typed),
    )


def revenue(
    conn: sqlite3.Connection, app_id: str, lo: int, hi: int
) -> Iterator[tuple[int, str, int, float]]:
    """(hour, currency, purchases, amount) from an_revenue."""
    return conn.execute(
        "SELECT hour, currency, purchases, amount FROM an_revenue WHERE app_id = ?"
        " AND hour >= ? AND hour < ?",
        (app_id, lo, hi),
    )


def push_messages(
    conn: sqlite3.Connection, app_id: str, lo_ms: int, hi_ms: int
) -> list[tuple[str, str | None, int, int | None]]:
    """(endpoint id, campaign id, created_at, delivered_at) of messages queued in range."""
    return conn.execute(
        "SELECT endpoint_id, campaign_id, created_at, delivered_at FROM push_messages"
        " WHERE app_id = ? AND created_at >= ? AND created_at < ?",
        (app_id, lo_ms, hi_ms),
    ).fetchall()


def _rows(
    conn: sqlite3.Connection,
    app_id: str,
    lo: int,
    hi: int,
    p: columnar.Plan | None,
    columns: str,
    types: Sequence[str],
    shape: Callable[[str], str],
    params: dict[str, Any],
) -> Iterator[Any]:
    """The rows of `columns` of the events of hours [lo, hi) that the events table is to
    give: all of them without a plan, else those of the days that are not sealed and
    those of sealed days past the watermark. `shape` makes the query from the SELECT,
    which may go on with "AND ..."."""
    spans = [(lo, hi)] if p is None else p.open
    common = {**params, "app": app_id, "lo_ms": lo * HOUR_MS, "hi_ms": hi * HOUR_MS}
    for span_lo, span_hi in spans:
        sql, named = events_sql.in_range(columns, types)
        yield from conn.execute(shape(sql), {**common, **named, "lo": span_lo, "hi": span_hi})
    if p is not None and p.sealed:
        sql, named = columnar.tail(columns, types, len(p.sealed))
        yield from conn.execute(shape(sql), {**common, **named, **columnar.tail_params(p)})


def _all_of(tests: Sequence[str]) -> str:
    """SQL that is 1 when every test is true, and stops at the first false one (AND, as
    a value, computes both of its sides). One flat CASE: nested ones, one per test, ran
    out of SQLite's parser stack for a step with a few dozen attribute conditions."""
    if not tests:
        return "1"
    return "(CASE" + "".join(f" WHEN NOT coalesce({t}, 0) THEN 0" for t in tests) + " ELSE 1 END)"


def _contains_any(name: str, values: Sequence[str], params: dict[str, Any]) -> str:
    """SQL that is true for every stored body holding one of `values` as a JSON string.

    A cheap test that drops most rows before Python reads them; the exact test on the
    parsed body follows. A value of printable ASCII other than '"', '\\' and '/' is
    written as is, between quotes, by every JSON encoder that does not escape for fun;
    a value with any other character may be escaped, so it matches every body."""
    tests = []
    for i, value in enumerate(values):
        if not _PLAIN.fullmatch(value):
            return "true"
        params[f"{name}{i}"] = b'"' + value.encode() + b'"'
        tests.append(f"instr(e.body, :{name}{i}) > 0")
    return "(" + " OR ".join(tests) + ")" if tests else "false"


_PLAIN = re.compile(r"[ !#-.0-\[\]-~]*")


def scan_events(
    conn: sqlite3.Connection,
    app_id: str,
    lo: int,
    hi: int,
    p: columnar.Plan | None,
    types: Sequence[str],
    include: Sequence[Sequence[str]],
) -> Iterator[tuple[str, int, bytes]]:
    """(event type, Timestamp, body) of the events of the range (see `_rows`) of `types`
    if any, and, for each of `include`, that may hold one of its values: a cheap test
    that drops most rows, the exact one being the caller's."""
    params: dict[str, Any] = {}
    where = "".join(
        " AND " + _contains_any(f"i{k}_", values, params) for k, values in enumerate(include)
    )
    return _rows(
        conn, app_id, lo, hi, p, "e.event_type, e.ts, e.body", types,
        lambda sql: sql + where, params,
    )  # fmt: skip


def funnel_rows(
    conn: sqlite3.Connection,
    app_id: str,
    lo: int,
    hi: int,
    p: columnar.Plan | None,
    steps: Sequence[Step],
) -> Iterator[tuple[str, int, int, int]]:
    """(endpoint id, Timestamp, steps matched as bits, rowid) of the events of the range
    (see `_rows`) that match a step. SQLite tells which steps each event matches, as a bit
    mask: only the events that match one reach Python, without their bodies."""
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
                tests.append(
                    "EXISTS (SELECT 1 FROM json_each(CAST(e.body AS TEXT), '$.Attributes')"
                    f" WHERE key = :n{k}_{a} AND value = :v{k}_{a})"
                )
            bits.append(f"({_all_of(tests)} << {k})")
        branches.append(f" WHEN :t{t} THEN {' | '.join(bits)}")
    mask = f"CASE e.event_type{''.join(branches)} ELSE 0 END"
    # LIMIT keeps SQLite from copying the mask into the outer WHERE, to compute it twice.
    return _rows(
        conn, app_id, lo, hi, p, f"e.endpoint_id, e.ts, {mask} AS m, e.rowid AS rid", types,
        lambda sql: f"SELECT endpoint_id, ts, m, rid FROM ({sql} LIMIT -1) WHERE m != 0",
        params,
    )  # fmt: skip
