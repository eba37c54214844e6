"""storage/values.py: one query joined to many keys."""

from __future__ import annotations

import re
import sqlite3

from homing_collector.storage.values import join_values

QUERY = "SELECT t.k, t.n FROM v JOIN t ON t.k = v.k ORDER BY t.k"


def test_padded_statements_serve_any_number_of_keys_with_one_text() -> None:
    """The fold joins a different number of keys each time: padded to a power of two with
    rows of NULLs, which match nothing, those of 3 and of 9 keys run the same statement
    (prepared once, then taken from the cache), and find what the unpadded one finds."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(f"k{i}", i) for i in range(20)])
    run: list[str] = []
    conn.set_trace_callback(run.append)
    for count in (3, 9):
        keys = [(f"k{i}",) for i in range(0, 2 * count, 2)]
        assert list(join_values(conn, "k", keys, QUERY, pad=True)) == list(
            join_values(conn, "k", keys, QUERY)
        )
        assert len(list(join_values(conn, "k", keys, QUERY, pad=True))) == count
    # The trace has the values bound; with them taken out, the texts run.
    texts = [re.sub(r"'k\d+'|NULL", "?", sql) for sql in run]
    padded = [text for text in texts if text.count("(?)") == 16]
    assert len(padded) == 4 and len(set(padded)) == 1


def test_more_keys_than_one_statement_takes() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(f"k{i:05d}", i) for i in range(9000)])
    keys = [(f"k{i:05d}",) for i in range(0, 9000, 1)]
    assert len(list(join_values(conn, "k", keys, QUERY, pad=True))) == 9000
