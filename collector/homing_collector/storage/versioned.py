"""Resources kept with every version, as segments and campaigns are: a head table, one
row a resource that names its latest version, joined on (app_id, key) to a table of
its versions (aliased `v`). The three reads they share: one version, a page of the
latest versions by id, and the versions after one."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Versioned:
    """`head` is the head table's name and alias ("segments s"), `versions` the versions
    table's name, `key` the id column, and `columns` what each read selects."""

    head: str
    versions: str
    key: str
    columns: str

    @property
    def join(self) -> str:
        return f"{self.head} JOIN {self.versions} v USING (app_id, {self.key})"

    def _rows(self, conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> Any:
        alias = self.head.split()[-1]
        return conn.execute(
            f"SELECT {self.columns} FROM {self.join} WHERE {alias}.app_id = ? AND "
            + where.format(h=alias, key=self.key),
            args,
        )

    def get(
        self, conn: sqlite3.Connection, app_id: str, resource_id: str, version: int | None
    ) -> Row | None:
        """The resource at `version`, or at its latest when None."""
        args: tuple[Any, ...] = (app_id, resource_id)
        if version is None:
            where = "{h}.{key} = ? AND v.version = {h}.version"
        else:
            where, args = "{h}.{key} = ? AND v.version = ?", (*args, version)
        found: Row | None = self._rows(conn, where, args).fetchone()
        return found

    def page(
        self, conn: sqlite3.Connection, app_id: str, after: str | None, limit: int
    ) -> list[Row]:
        """The latest version of each resource, by id, after the id `after`."""
        where = "{h}.{key} > ? AND v.version = {h}.version ORDER BY {h}.{key} LIMIT ?"
        found: list[Row] = self._rows(conn, where, (app_id, after or "", limit)).fetchall()
        return found

    def versions_after(
        self, conn: sqlite3.Connection, app_id: str, resource_id: str, after: int, limit: int
    ) -> list[Row]:
        """The resource's versions after `after`, oldest first."""
        where = "{h}.{key} = ? AND v.version > ? ORDER BY v.version LIMIT ?"
        found: list[Row] = self._rows(conn, where, (app_id, resource_id, after, limit)).fetchall()
        return found
