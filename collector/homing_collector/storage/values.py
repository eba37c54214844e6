"""One query joined to many keys at once, in statements that stay within SQLite's limits."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

_MAX_VARIABLES = 8000  # per statement; SQLite allows 32,766 (999 before 3.32)


def join_values(
    conn: sqlite3.Connection, columns: str, rows: Sequence[Sequence[Any]], query: str
) -> Iterator[Any]:
    """Yield what `WITH v(columns) AS (VALUES rows) query` returns, `query` reading `v`.

    >>> conn = sqlite3.connect(":memory:")
    >>> list(join_values(conn, "a, b", [(1, 2), (3, 4)], "SELECT a + b FROM v"))
    [(3,), (7,)]
    """
    width = columns.count(",") + 1
    row_marks = f"({', '.join('?' * width)})"
    per_statement = _MAX_VARIABLES // width
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        marks = ", ".join([row_marks] * len(chunk))
        yield from conn.execute(
            f"WITH v({columns}) AS (VALUES {marks}) {query}", [x for row in chunk for x in row]
        )
