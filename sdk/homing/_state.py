"""Small persistent state (endpoint id, profile, session) in sqlitedict, JSON-encoded.

Values are encoded as JSON (homing._json), never pickle: a state file that someone else wrote
must not be able to run code in the app.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

from sqlitedict import SqliteDict

from homing import _json

logger = logging.getLogger("homing")


def _encode(value: Any) -> bytes:
    return _json.dumps(value)


def _decode(data: bytes) -> Any:
    return _json.loads(data)


class State:
    # Named tables of JSON values in one file; in memory when `path` is None.

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._tables: dict[str, MutableMapping[str, Any]] = {}
        self._memory = path is None
        self._checked = False
        self._closed = False

    def table(self, name: str) -> MutableMapping[str, Any]:
        if self._closed:
            return {}  # released for good: a late caller must not reopen the file
        if name not in self._tables:
            self._tables[name] = self._open(name)
        return self._tables[name]

    def _open(self, name: str) -> MutableMapping[str, Any]:
        if self.path is None or self._memory:
            return {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._checked:
                # sqlitedict would meet a corrupt file on its own thread, where the error
                # escapes as an unhandled thread exception: look at the file first.
                _check_file(self.path)
                self._checked = True
            table = _open_dict(self.path, name)
            len(table)  # forces a read: a corrupt file fails here, not later
            return table
        except Exception as exc:  # sqlitedict wraps sqlite errors in RuntimeError
            aside = self.path.with_name(
                f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
            )
            logger.warning("homing: the state file %s is unreadable (%s); moved it to %s",
                           self.path, exc, aside)  # fmt: skip
            for table in self._tables.values():
                _close(table)
            self._tables.clear()
            try:
                self.path.rename(aside)
                return _open_dict(self.path, name)
            except Exception:
                logger.warning("homing: keeping state in memory", exc_info=True)
                self._memory = True
                return {}

    def after_fork_in_child(self) -> None:
        # sqlitedict runs its queries on a thread, and threads do not survive fork.
        names = list(self._tables)
        self._tables.clear()
        for name in names:
            self._tables[name] = self._open(name)

    def close(self) -> None:
        self._closed = True
        for table in self._tables.values():
            _close(table)
        self._tables.clear()


def _open_dict(path: Path, name: str) -> MutableMapping[str, Any]:
    table: MutableMapping[str, Any] = SqliteDict(
        str(path),
        tablename=name,
        autocommit=True,
        journal_mode="WAL",
        encode=_encode,
        decode=_decode,
        outer_stack=False,
    )
    return table


def _check_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        conn.close()


def _close(table: MutableMapping[str, Any]) -> None:
    if isinstance(table, SqliteDict):
        with contextlib.suppress(Exception):
            table.close()


class TableView(MutableMapping[str, Any]):
    # A table looked up on every access, so that it follows `State` across a fork.

    def __init__(self, state: State, name: str) -> None:
        self._state = state
        self._name = name

    def __getitem__(self, key: str) -> Any:
        return self._state.table(self._name)[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state.table(self._name)[key] = value

    def __delitem__(self, key: str) -> None:
        del self._state.table(self._name)[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._state.table(self._name)))

    def __len__(self) -> int:
        return len(self._state.table(self._name))
