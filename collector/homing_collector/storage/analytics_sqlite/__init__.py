"""The SQLite statements of the analytics rollups and queries.

`homing_collector.analytics` says what the figures mean and adds them up; the modules
here read and write the an_* tables (migration 3 on) for it, one function per statement
or per few statements, each taking the connection of the caller's transaction. Another
backend keeps the same functions over its own SQL.
"""

from __future__ import annotations

import sqlite3

Connection = sqlite3.Connection  # what the analytics pass through to these functions
