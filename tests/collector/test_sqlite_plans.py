"""SQLite's plans for the statements that find a user's endpoints.

Without statistics (the collector does not ANALYZE), SQLite reads an application's every
endpoint by the primary key's prefix rather than use the partial index endpoints_user,
unless a statement names it. Every such statement run by the user operations below is
caught as it runs and its plan checked.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from homing_collector import endpoints
from homing_collector.storage.base import AppRecord, EndpointUpdate, ImportJobRecord, ImportRow
from homing_collector.storage.sqlite import SQLiteStorage

APP = "0123456789abcdef0123456789abcdef"
NOW = "2026-12-01T00:00:00.000Z"
# A statement that picks endpoints by application and user.
BY_USER = re.compile(r"\bFROM endpoints\b(?: INDEXED BY \w+)? WHERE app_id = \S+ AND user_id = ")


def test_every_statement_that_finds_a_users_endpoints_uses_the_user_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)
    merge = partial(endpoints.merge, APP, now=NOW)

    async def scenario() -> None:
        storage = SQLiteStorage(tmp_path / "homing.db")
        await storage.start()
        try:
            await storage.create_app(AppRecord(APP, "app", NOW, {}))
            updates = [
                EndpointUpdate(f"e{n}", {"ChannelType": "GCM", "User": {"UserId": f"u{n % 3}"}})
                for n in range(9)
            ]
            await storage.update_endpoints(APP, updates, merge=merge, max_user_endpoints=15)
            assert len(await storage.get_user_endpoints(APP, "u1")) == 3
            job = ImportJobRecord(APP, "j1", NOW, "{}", "CREATED", 1, None, 0, 0, 0, 0, [],
                                  None, "test", 0)  # fmt: skip
            await storage.create_import_job(job)
            rows = [ImportRow(1, None, {"User": {"UserId": "u2"}})]
            await storage.import_endpoints(APP, "j1", rows, merge=merge, max_user_endpoints=15,
                                           register=True, members=True)  # fmt: skip
            assert len(await storage.delete_user_endpoints(APP, "u0")) == 3
        finally:
            await storage.close()

    asyncio.run(scenario())
    monkeypatch.setattr(sqlite3, "connect", connect)
    by_user = {statement for statement in statements if BY_USER.search(statement)}
    # get_user_endpoints, delete_user_endpoints, the import's user rows, the new user's
    # endpoint count, and its other endpoints' values.
    assert len(by_user) >= 5, by_user
    conn = sqlite3.connect(tmp_path / "homing.db")
    for statement in sorted(by_user):
        plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}"))
        assert "endpoints_user" in plan, (statement, plan)
    conn.close()
