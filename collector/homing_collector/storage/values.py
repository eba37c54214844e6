"""One query joined to many keys at once, in statements that stay within SQLite's limits."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

_MAX_VARIABLES = 8000  # per statement; SQLite allows 32,766 (999 before 3.32)


def join_values(
    conn: sqlite3.Connection,
    columns: str,
    rows: Sequence[Sequence[Any]],
    query: str,
    *,
    pad: bool = False,
) -> Iterator[Any]:
    """Yield what `WITH v(columns) AS (VALUES rows) query` returns, `query` reading `v`.

    With `pad`, a statement's rows are made up to a power of two (16 at least) with rows
    of NULLs, so that a few statements, prepared once and cached, serve any number of
    keys: preparing one of hundreds of rows costs several times what running it does.
    Only for a `query` that returns nothing for a row of NULLs (v joined on its columns
    with `=`).

    >>> conn = sqlite3.connect(":memory:")
    >>> list(join_values(conn, "a, b", [(1, 2), (3, 4)], "SELECT a + b FROM v"))
    [(3,), (7,)]
    >>> list(join_values(conn, "a", [(1,), (3,)], "SELECT x FROM v JOIN (SELECT 3 AS x) ON x = a",
    ...                  pad=True))
    [(3,)]
    """
    width = columns.count(",") + 1
    row_marks = f"({', '.join('?' * width)})"
    per_statement = _MAX_VARIABLES // width
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values = [x for row in chunk for x in row]
        count = len(chunk)
        if pad:
            count = min(per_statement, 1 << max(4, (count - 1).bit_length()))
            values += [None] * ((count - len(chunk)) * width)
        marks = ", ".join([row_marks] * count)
        yield from conn.execute(f"WITH v({columns}) AS (VALUES {marks}) {query}", values)
