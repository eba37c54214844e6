"""Resources kept with every version, as segments and campaigns are: a head table, one
row a resource that names its latest version, joined on (app_id, key) to a table of
its versions (aliased `v`). The three reads they share: one version, a page of the
latest versions by id, and the versions after one. Each backend runs the same
statements with its own parameter mark (`mark`)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

Row = tuple[Any, ...]
Query = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Versioned:
    """`head` is the head table's name and alias ("segments s"), `versions` the versions
    table's name, `key` the id column, `columns` what each read selects, and `mark` the
    backend's parameter mark ("?" for SQLite, "%s" for PostgreSQL)."""

    head: str
    versions: str
    key: str
    columns: str
    mark: str = "?"

    @property
    def join(self) -> str:
        return f"{self.head} JOIN {self.versions} v USING (app_id, {self.key})"

    def _query(self, where: str, args: tuple[Any, ...]) -> Query:
        alias = self.head.split()[-1]
        p = self.mark
        sql = f"SELECT {self.columns} FROM {self.join} WHERE {alias}.app_id = {p} AND "
        return sql + where.format(h=alias, key=self.key, p=p), args

    def get_query(self, app_id: str, resource_id: str, version: int | None) -> Query:
        """The resource at `version`, or at its latest when None."""
        if version is None:
            return self._query("{h}.{key} = {p} AND v.version = {h}.version", (app_id, resource_id))
        return self._query("{h}.{key} = {p} AND v.version = {p}", (app_id, resource_id, version))

    def page_query(self, app_id: str, after: str | None, limit: int) -> Query:
        """The latest version of each resource, by id, after the id `after`."""
        where = "{h}.{key} > {p} AND v.version = {h}.version ORDER BY {h}.{key} LIMIT {p}"
        return self._query(where, (app_id, after or "", limit))

    def versions_query(self, app_id: str, resource_id: str, after: int, limit: int) -> Query:
        """The resource's versions after `after`, oldest first."""
        where = "{h}.{key} = {p} AND v.version > {p} ORDER BY v.version LIMIT {p}"
        return self._query(where, (app_id, resource_id, after, limit))

    def get(
        self, conn: sqlite3.Connection, app_id: str, resource_id: str, version: int | None
    ) -> Row | None:
        found: Row | None = conn.execute(*self.get_query(app_id, resource_id, version)).fetchone()
        return found

    def page(
        self, conn: sqlite3.Connection, app_id: str, after: str | None, limit: int
    ) -> list[Row]:
        found: list[Row] = conn.execute(*self.page_query(app_id, after, limit)).fetchall()
        return found

    def versions_after(
        self, conn: sqlite3.Connection, app_id: str, resource_id: str, after: int, limit: int
    ) -> list[Row]:
        query = self.versions_query(app_id, resource_id, after, limit)
        found: list[Row] = conn.execute(*query).fetchall()
        return found
