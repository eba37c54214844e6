"""SQL of device credentials, run by SQLiteStorage (writes in its writer thread).

Only a SHA-256 hash of each credential is stored, as for bearer tokens.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from homing_collector.storage.values import join_values


def read(conn: sqlite3.Connection, app_id: str, endpoint_ids: Sequence[str]) -> dict[str, str]:
    rows = [(app_id, endpoint_id) for endpoint_id in dict.fromkeys(endpoint_ids)]
    return dict(
        join_values(
            conn,
            "app_id, endpoint_id",
            rows,
            "SELECT endpoint_id, secret_sha256 FROM v JOIN device_credentials"
            " USING (app_id, endpoint_id)",
        )
    )


def store(
    conn: sqlite3.Connection,
    app_id: str,
    endpoint_id: str,
    secret_sha256: str,
    created_at: str,
    *,
    replace: bool,
) -> bool:
    conflict = (
        "DO UPDATE SET secret_sha256 = excluded.secret_sha256, created_at = excluded.created_at"
        if replace
        else "DO NOTHING"
    )
    cursor = conn.execute(
        "INSERT INTO device_credentials (app_id, endpoint_id, secret_sha256, created_at)"
        f" VALUES (?, ?, ?, ?) ON CONFLICT (app_id, endpoint_id) {conflict}",
        (app_id, endpoint_id, secret_sha256, created_at),
    )
    return cursor.rowcount > 0


def delete(conn: sqlite3.Connection, app_id: str, endpoint_id: str) -> bool:
    cursor = conn.execute(
        "DELETE FROM device_credentials WHERE app_id = ? AND endpoint_id = ?",
        (app_id, endpoint_id),
    )
    return cursor.rowcount > 0


def delete_app(conn: sqlite3.Connection, app_id: str) -> None:
    conn.execute("DELETE FROM device_credentials WHERE app_id = ?", (app_id,))
