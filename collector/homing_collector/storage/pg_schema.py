"""Versioned, forward-only schema migrations for PostgreSQL (storage/postgres.py).

Append a new (version, sql) pair to change the schema; never edit one that shipped.

Many collectors may start on one database at once: the migrations run in one
transaction under a transaction-level advisory lock, so one node migrates and the others
wait for it, then find nothing left to do.

Ready for Citus: every table of an application's data has the application id first in
its primary key (the distribution column), and no foreign key or query crosses
applications. `apps` is keyed by that id too. `keys` is looked up by access key id
before the application is known, and root keys have none, so it is meant to be a
reference table; `task_leases` and `schema_migrations` belong to no application.

Times are kept as SQLite keeps them (ISO 8601 text, or ms since the epoch), and JSON as
the text that was written, and text sorts byte by byte (COLLATE "C", as SQLite sorts
it), so that both backends answer alike, pages included.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import psycopg

# Any fixed number, the same in every process: it names the lock migrations run under.
MIGRATION_LOCK = 0x686F6D696E67  # "homing"

PG_MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        # Events: the key is SQLite's (storage/events.py), so an event sent again is
        # stored once on both backends alike, and a range of time is a range of the key's
        # (app, UTC hour) prefix, where a device's batch lands among its hour's rows. An
        # endpoint's events are found (to delete them) through events_endpoint.
        """
        CREATE TABLE apps (
            id text COLLATE "C" PRIMARY KEY,
            name text COLLATE "C" NOT NULL,
            tags text COLLATE "C" NOT NULL DEFAULT '{}',
            created_at text COLLATE "C" NOT NULL
        );
        CREATE TABLE keys (
            access_key_id text COLLATE "C" PRIMARY KEY,
            app_id text COLLATE "C",
            role text COLLATE "C" NOT NULL CHECK (role IN ('ingest', 'admin', 'root')),
            secret text COLLATE "C" NOT NULL,
            token_sha256 text COLLATE "C" NOT NULL UNIQUE,
            created_at text COLLATE "C" NOT NULL,
            revoked_at text COLLATE "C"
        );
        CREATE INDEX keys_app ON keys (app_id);
        CREATE TABLE endpoints (
            app_id text COLLATE "C" NOT NULL,
            endpoint_id text COLLATE "C" NOT NULL,
            user_id text COLLATE "C",
            body text COLLATE "C" NOT NULL,
            PRIMARY KEY (app_id, endpoint_id)
        );
        CREATE INDEX endpoints_user ON endpoints (app_id, user_id) WHERE user_id IS NOT NULL;
        CREATE TABLE events (
            app_id text COLLATE "C" NOT NULL,
            hour bigint NOT NULL,
            endpoint_id text COLLATE "C" NOT NULL,
            event_id text COLLATE "C" NOT NULL,
            event_type text COLLATE "C" NOT NULL,
            ts bigint NOT NULL,
            arrival bigint NOT NULL,
            session_id text COLLATE "C",
            body bytea NOT NULL,
            PRIMARY KEY (app_id, hour, endpoint_id, event_id, event_type, ts)
        );
        CREATE INDEX events_endpoint ON events (app_id, endpoint_id);
        CREATE TABLE event_types (
            app_id text COLLATE "C" NOT NULL,
            event_type text COLLATE "C" NOT NULL,
            created_at text COLLATE "C" NOT NULL,
            PRIMARY KEY (app_id, event_type)
        );
        CREATE TABLE app_settings (
            app_id text COLLATE "C" PRIMARY KEY,
            settings text COLLATE "C" NOT NULL,
            modified_at text COLLATE "C" NOT NULL
        );
        CREATE TABLE app_quotas (
            app_id text COLLATE "C" PRIMARY KEY,
            quotas text COLLATE "C" NOT NULL,
            modified_at text COLLATE "C" NOT NULL
        );
        CREATE TABLE app_retention (
            app_id text COLLATE "C" PRIMARY KEY,
            events_days integer NOT NULL,
            modified_at text COLLATE "C" NOT NULL
        );
        CREATE TABLE device_credentials (
            app_id text COLLATE "C" NOT NULL,
            endpoint_id text COLLATE "C" NOT NULL,
            secret_sha256 text COLLATE "C" NOT NULL,
            created_at text COLLATE "C" NOT NULL,
            PRIMARY KEY (app_id, endpoint_id)
        );
        CREATE TABLE task_leases (
            name text COLLATE "C" PRIMARY KEY,
            owner text COLLATE "C" NOT NULL,
            expires_at bigint NOT NULL
        );
        """,
    ),
    (
        2,
        # Push store-and-forward, as SQLite keeps it (storage/push.py): each endpoint's
        # messages numbered 1, 2, ... for good, by its row in push_endpoints.
        """
        CREATE TABLE push_messages (
            app_id text COLLATE "C" NOT NULL,
            endpoint_id text COLLATE "C" NOT NULL,
            seq bigint NOT NULL,
            message_id text COLLATE "C" NOT NULL,
            silent boolean NOT NULL,
            payload text NOT NULL,
            campaign_id text COLLATE "C",
            created_at bigint NOT NULL,
            expires_at bigint NOT NULL,
            delivered_at bigint,
            PRIMARY KEY (app_id, endpoint_id, seq)
        );
        CREATE INDEX push_messages_id ON push_messages (app_id, message_id);
        CREATE INDEX push_messages_expiry ON push_messages (expires_at)
            WHERE delivered_at IS NULL;
        CREATE INDEX push_messages_created ON push_messages (created_at)
            WHERE delivered_at IS NULL;
        CREATE TABLE push_endpoints (
            app_id text COLLATE "C" NOT NULL,
            endpoint_id text COLLATE "C" NOT NULL,
            last_seq bigint NOT NULL,
            dropped bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (app_id, endpoint_id)
        );
        """,
    ),
    (
        3,
        # Segments, as SQLite keeps them (storage/segments.py): the segment, naming its
        # latest version, and each version with the request that made it.
        """
        CREATE TABLE segments (
            app_id text COLLATE "C" NOT NULL,
            segment_id text COLLATE "C" NOT NULL,
            version integer NOT NULL,
            created_at text COLLATE "C" NOT NULL,
            tags text NOT NULL DEFAULT '{}',
            PRIMARY KEY (app_id, segment_id)
        );
        CREATE TABLE segment_versions (
            app_id text COLLATE "C" NOT NULL,
            segment_id text COLLATE "C" NOT NULL,
            version integer NOT NULL,
            created_at text COLLATE "C" NOT NULL,
            request text NOT NULL,
            PRIMARY KEY (app_id, segment_id, version)
        );
        """,
    ),
    (
        4,
        # Import jobs, as SQLite keeps them (storage/imports.py): each job with its
        # progress, and the endpoint ids it imported, the members of its segment.
        """
        CREATE TABLE import_jobs (
            app_id text COLLATE "C" NOT NULL,
            job_id text COLLATE "C" NOT NULL,
            segment_id text COLLATE "C",
            created_at text COLLATE "C" NOT NULL,
            definition text NOT NULL,
            status text COLLATE "C" NOT NULL,
            total_pieces integer NOT NULL,
            completed_pieces integer NOT NULL DEFAULT 0,
            failed_pieces integer NOT NULL DEFAULT 0,
            total_processed bigint NOT NULL DEFAULT 0,
            total_failures bigint NOT NULL DEFAULT 0,
            failures text NOT NULL DEFAULT '[]',
            completed_at text COLLATE "C",
            owner text COLLATE "C" NOT NULL,
            heartbeat bigint NOT NULL,
            PRIMARY KEY (app_id, job_id)
        );
        CREATE INDEX import_jobs_by_segment ON import_jobs (app_id, segment_id, job_id);
        CREATE INDEX import_jobs_unfinished ON import_jobs (status)
            WHERE status NOT IN ('COMPLETED', 'FAILED');
        CREATE TABLE import_members (
            app_id text COLLATE "C" NOT NULL,
            job_id text COLLATE "C" NOT NULL,
            endpoint_id text COLLATE "C" NOT NULL,
            channel text COLLATE "C",
            PRIMARY KEY (app_id, job_id, endpoint_id)
        );
        """,
    ),
]


async def migrate(conn: psycopg.AsyncConnection[Any]) -> int:
    """Bring the schema up to date in one transaction; return its version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version integer PRIMARY KEY, applied_at text NOT NULL)"
        )
        cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
        row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        for version, sql in PG_MIGRATIONS:
            if version <= current:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                (version, datetime.now(timezone.utc).isoformat()),
            )
            current = version
    return current
