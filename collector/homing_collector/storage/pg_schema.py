"""Versioned, forward-only schema migrations for PostgreSQL (storage/postgres.py).

Append a new (version, sql) pair to change the schema; never edit one that shipped.

Many collectors may start on one database at once: the migrations run in one
transaction under a transaction-level advisory lock, so one node migrates and the others
wait for it, then find nothing left to do.

Ready for Citus: every table of an application's data has the application id first in
its primary key (the distribution column), and no foreign key crosses applications.
`apps` is keyed by that id too. `keys` is looked up by access key id before the
application is known, and root keys have none, so it is meant to be a reference table;
`task_leases` and `schema_migrations` belong to no application. The scheduler's and the
outbox's claims read across applications with row locks, which Citus does not take over
several shards: those two are not ready for it yet (docs/deployment.md).

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
        # endpoint's events are found (to delete them) through events_endpoint (until
        # migration 12).
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
    (
        5,
        # Campaigns, as SQLite keeps them (storage/campaigns.py): the campaign and each of
        # its versions; one activity per run, which is also the scheduler's job, held by
        # one collector at a time through its lease (taken under a row lock, SKIP LOCKED,
        # so collectors claiming at once take different runs); and one row per endpoint
        # and activity, written with the endpoint's push.
        """
        CREATE TABLE campaigns (
            app_id text COLLATE "C" NOT NULL,
            campaign_id text COLLATE "C" NOT NULL,
            version integer NOT NULL,
            created_at text COLLATE "C" NOT NULL,
            segment_id text COLLATE "C" NOT NULL,
            state text COLLATE "C" NOT NULL,
            tags text NOT NULL DEFAULT '{}',
            planned_ms bigint,
            finished boolean NOT NULL DEFAULT false,
            PRIMARY KEY (app_id, campaign_id)
        );
        CREATE INDEX campaigns_segment ON campaigns (app_id, segment_id);
        CREATE INDEX campaigns_unfinished ON campaigns (app_id) WHERE NOT finished;
        CREATE TABLE campaign_versions (
            app_id text COLLATE "C" NOT NULL,
            campaign_id text COLLATE "C" NOT NULL,
            version integer NOT NULL,
            created_at text COLLATE "C" NOT NULL,
            request text NOT NULL,
            PRIMARY KEY (app_id, campaign_id, version)
        );
        CREATE TABLE campaign_activities (
            app_id text COLLATE "C" NOT NULL,
            campaign_id text COLLATE "C" NOT NULL,
            activity_id text COLLATE "C" NOT NULL,
            version integer NOT NULL,
            scheduled_ms bigint NOT NULL,
            state text COLLATE "C" NOT NULL,
            started_at text COLLATE "C",
            ended_at text COLLATE "C",
            result text COLLATE "C",
            cursor text COLLATE "C",
            not_before_ms bigint NOT NULL,
            lease_owner text COLLATE "C",
            lease_until_ms bigint,
            total bigint NOT NULL DEFAULT 0,
            successful bigint NOT NULL DEFAULT 0,
            metrics text NOT NULL DEFAULT '{}',
            PRIMARY KEY (app_id, campaign_id, activity_id),
            UNIQUE (app_id, campaign_id, scheduled_ms)
        );
        CREATE INDEX campaign_activities_open ON campaign_activities (not_before_ms)
            WHERE state IN ('PENDING', 'RUNNING');
        CREATE TABLE campaign_sends (
            app_id text COLLATE "C" NOT NULL,
            campaign_id text COLLATE "C" NOT NULL,
            activity_id text COLLATE "C" NOT NULL,
            endpoint_id text COLLATE "C" NOT NULL,
            status text COLLATE "C" NOT NULL,
            treatment_id text COLLATE "C",
            at_ms bigint NOT NULL,
            message_id text COLLATE "C",
            session_id text COLLATE "C",
            PRIMARY KEY (app_id, campaign_id, activity_id, endpoint_id)
        );
        CREATE INDEX campaign_sends_endpoint
            ON campaign_sends (app_id, campaign_id, endpoint_id, at_ms);
        """,
    ),
    (
        6,
        # Hooks, as SQLite keeps them (storage/outbox.py): each application's signing
        # secrets, the outbox of outgoing calls, each leased by one collector at a time,
        # and the destinations that answered 410. A delivery's seq comes from a sequence,
        # so it is unique across applications, but its key starts with the application,
        # as every table's here does; the claim reads across applications.
        """
        CREATE TABLE hook_secrets (
            app_id text COLLATE "C" PRIMARY KEY,
            current text NOT NULL,
            previous text,
            rotated_at text COLLATE "C" NOT NULL
        );
        CREATE TABLE outbox (
            seq bigint GENERATED ALWAYS AS IDENTITY,
            id text COLLATE "C" NOT NULL,
            app_id text COLLATE "C" NOT NULL,
            destination text COLLATE "C" NOT NULL,
            ordered boolean NOT NULL DEFAULT false,
            body bytea NOT NULL,
            content_type text NOT NULL,
            content_encoding text,
            state text COLLATE "C" NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'delivered', 'dead')),
            attempts integer NOT NULL DEFAULT 0,
            created_at double precision NOT NULL,
            first_attempt_at double precision,
            next_attempt_at double precision NOT NULL,
            lease_owner text COLLATE "C",
            lease_until double precision,
            last_error text,
            finished_at double precision,
            PRIMARY KEY (app_id, seq),
            UNIQUE (app_id, id)
        );
        CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
        CREATE INDEX outbox_queue ON outbox (app_id, destination, seq) WHERE state = 'pending';
        CREATE INDEX outbox_dead ON outbox (app_id, seq) WHERE state = 'dead';
        CREATE INDEX outbox_delivered ON outbox (finished_at) WHERE state = 'delivered';
        CREATE TABLE hook_destinations (
            app_id text COLLATE "C" NOT NULL,
            destination text COLLATE "C" NOT NULL,
            disabled_at double precision NOT NULL,
            reason text NOT NULL,
            PRIMARY KEY (app_id, destination)
        );
        """,
    ),
    (
        7,
        # Event streams and in-process hooks (storage/pg_streams.py). An event's `pos` is
        # the id of the transaction that stored it, shifted left by POS_RANK_BITS, plus its
        # rank in that transaction: readers go in pos order, and only through
        # transactions that have all ended. Events stored before this migration have pos
        # 0, before every cursor: a stream or hook made since starts after them. The
        # streams' and hooks' cursors are positions (an event's pos, or one before a
        # transaction's first). Not for Citus: each worker numbers its own transactions.
        """
        ALTER TABLE events ADD COLUMN pos bigint NOT NULL DEFAULT 0;
        ALTER TABLE events ALTER COLUMN pos DROP DEFAULT;
        CREATE INDEX events_pos ON events (pos);
        CREATE TABLE event_streams (
            app_id text COLLATE "C" PRIMARY KEY,
            destination text COLLATE "C" NOT NULL,
            role_arn text COLLATE "C" NOT NULL,
            last_modified text COLLATE "C" NOT NULL,
            last_updated_by text COLLATE "C" NOT NULL,
            cursor bigint NOT NULL
        );
        CREATE TABLE hook_cursors (
            name text COLLATE "C" PRIMARY KEY,
            cursor bigint NOT NULL
        );
        """,
    ),
    (
        8,
        # The analytics: the rollups kept at ingest (homing_collector.analytics.rollups;
        # SQLite's migrations 3, 5 and 17), the demographic counters
        # (storage/endpoint_values.py) and the notification opens, with SQLite's names and
        # columns. The rows of the events and endpoints stored before are added by
        # `fill_analytics` in the same transaction. an_opens has no key, as on SQLite:
        # two opens may be alike.
        """
        CREATE TABLE an_active (
            app_id text COLLATE "C" NOT NULL,
            kind integer NOT NULL,
            hour bigint NOT NULL,
            key text COLLATE "C" NOT NULL,
            PRIMARY KEY (app_id, kind, hour, key)
        );
        CREATE INDEX an_active_key ON an_active (app_id, kind, key, hour);
        CREATE TABLE an_subjects (
            app_id text COLLATE "C" NOT NULL,
            kind integer NOT NULL,
            key text COLLATE "C" NOT NULL,
            first_hour bigint NOT NULL,
            last_hour bigint NOT NULL,
            PRIMARY KEY (app_id, kind, key)
        );
        CREATE INDEX an_subjects_first ON an_subjects (app_id, kind, first_hour);
        CREATE TABLE an_counts (
            app_id text COLLATE "C" NOT NULL,
            hour bigint NOT NULL,
            event_type text COLLATE "C" NOT NULL,
            count bigint NOT NULL,
            PRIMARY KEY (app_id, hour, event_type)
        );
        CREATE TABLE an_metrics (
            app_id text COLLATE "C" NOT NULL,
            hour bigint NOT NULL,
            event_type text COLLATE "C" NOT NULL,
            name text COLLATE "C" NOT NULL,
            count bigint NOT NULL,
            sum double precision NOT NULL,
            min double precision NOT NULL,
            max double precision NOT NULL,
            PRIMARY KEY (app_id, hour, event_type, name)
        );
        CREATE TABLE an_revenue (
            app_id text COLLATE "C" NOT NULL,
            hour bigint NOT NULL,
            currency text COLLATE "C" NOT NULL,
            purchases bigint NOT NULL,
            amount double precision NOT NULL,
            PRIMARY KEY (app_id, hour, currency)
        );
        CREATE TABLE an_sessions (
            app_id text COLLATE "C" NOT NULL,
            endpoint_id text COLLATE "C" NOT NULL,
            session_id text COLLATE "C" NOT NULL,
            start_ms bigint NOT NULL,
            stop_ms bigint NOT NULL,
            PRIMARY KEY (app_id, endpoint_id, session_id)
        );
        CREATE INDEX an_sessions_start ON an_sessions (app_id, start_ms);
        CREATE INDEX an_sessions_endpoint_start ON an_sessions (app_id, endpoint_id, start_ms);
        CREATE TABLE an_cover (
            app_id text COLLATE "C" NOT NULL,
            kind integer NOT NULL,
            span bigint NOT NULL,
            hour bigint NOT NULL,
            delta bigint NOT NULL,
            PRIMARY KEY (app_id, kind, span, hour)
        );
        CREATE TABLE an_retention (
            app_id text COLLATE "C" NOT NULL,
            kind integer NOT NULL,
            phase integer NOT NULL,
            cohort bigint NOT NULL,
            day_offset integer NOT NULL,
            count bigint NOT NULL,
            PRIMARY KEY (app_id, kind, phase, cohort, day_offset)
        );
        CREATE TABLE an_visits (
            app_id text COLLATE "C" NOT NULL,
            endpoint_id text COLLATE "C" NOT NULL,
            start_ms bigint NOT NULL,
            stop_ms bigint NOT NULL,
            PRIMARY KEY (app_id, endpoint_id, start_ms)
        );
        CREATE TABLE an_visit_hours (
            app_id text COLLATE "C" NOT NULL,
            hour bigint NOT NULL,
            count bigint NOT NULL,
            total_ms bigint NOT NULL,
            PRIMARY KEY (app_id, hour)
        );
        CREATE TABLE an_visit_lengths (
            app_id text COLLATE "C" NOT NULL,
            hour bigint NOT NULL,
            bucket bigint NOT NULL,
            count bigint NOT NULL,
            PRIMARY KEY (app_id, hour, bucket)
        );
        CREATE TABLE an_user_keys (
            app_id text COLLATE "C" NOT NULL,
            endpoint_id text COLLATE "C" NOT NULL,
            key text COLLATE "C" NOT NULL,
            PRIMARY KEY (app_id, endpoint_id, key)
        );
        CREATE INDEX an_user_keys_key ON an_user_keys (app_id, key);
        CREATE TABLE an_opens (
            app_id text COLLATE "C" NOT NULL,
            endpoint_id text COLLATE "C" NOT NULL,
            ts bigint NOT NULL,
            campaign_id text COLLATE "C"
        );
        CREATE INDEX an_opens_ts ON an_opens (app_id, ts, endpoint_id, campaign_id);
        CREATE INDEX an_opens_endpoint ON an_opens (app_id, endpoint_id);
        CREATE TABLE endpoint_values (
            app_id text COLLATE "C" NOT NULL,
            dimension text COLLATE "C" NOT NULL,
            value text COLLATE "C" NOT NULL,
            endpoints bigint NOT NULL,
            anonymous bigint NOT NULL,
            users bigint NOT NULL,
            PRIMARY KEY (app_id, dimension, value)
        );
        WITH d(dimension, section, field) AS (VALUES
            ('platform', 'Demographic', 'Platform'),
            ('platform_version', 'Demographic', 'PlatformVersion'),
            ('app_version', 'Demographic', 'AppVersion'),
            ('make', 'Demographic', 'Make'),
            ('model', 'Demographic', 'Model'),
            ('country', 'Location', 'Country'),
            ('locale', 'Demographic', 'Locale')
        ), facts AS (
            SELECT e.app_id, d.dimension, e.user_id,
                coalesce('=' || (e.body::jsonb -> d.section ->> d.field), '') AS value
            FROM endpoints e, d
        )
        INSERT INTO endpoint_values (app_id, dimension, value, endpoints, anonymous, users)
            SELECT app_id, dimension, value, count(*), count(*) - count(user_id),
                count(DISTINCT user_id)
            FROM facts GROUP BY app_id, dimension, value;
        """,
    ),
    (
        9,
        # What ingestion adds to the rollups, appended by each PutEvents transaction and
        # folded into migration 8's tables by one collector at a time
        # (storage/analytics_pg/pending.py): concurrent ingest transactions no longer
        # wait on one another's locks of the same hot rollup rows.
        """
        CREATE TABLE an_pending (
            app_id text COLLATE "C" NOT NULL,
            id bigserial NOT NULL,
            summary bytea NOT NULL,
            PRIMARY KEY (app_id, id)
        );
        CREATE INDEX an_pending_id ON an_pending (id);
        """,
    ),
    (
        10,
        # What endpoint writes add to migration 8's demographic counters, appended by
        # their transaction and folded into endpoint_values with the rollups' entries
        # (storage/analytics_pg/endpoint_values.py): the collectors that make endpoints
        # of one value no longer wait on one another's lock of its row. No key: the fold
        # takes every row its statement sees, and the inserts stay one heap write each.
        """
        CREATE TABLE endpoint_values_pending (
            app_id text COLLATE "C" NOT NULL,
            dimension text COLLATE "C" NOT NULL,
            value text COLLATE "C" NOT NULL,
            endpoints bigint NOT NULL,
            anonymous bigint NOT NULL,
            users bigint NOT NULL
        );
        """,
    ),
    (
        11,
        # The deletions of events, counted by the transaction that deletes them, per
        # application and UTC day of the events deleted (day -1: the application itself),
        # so that a collector's columnar copy (storage/pg_columnar.py) knows which of its
        # sealed days still hold exactly the stored events. Each count only grows; the
        # application's day -1 stays when it is deleted, and tells its copies so.
        """
        CREATE TABLE events_deleted (
            app_id text COLLATE "C" NOT NULL,
            day bigint NOT NULL,
            count bigint NOT NULL,
            PRIMARY KEY (app_id, day)
        );
        """,
    ),
    (
        12,
        # Cheaper ingestion (bench/collector_ingest.py --postgres, docs/deployment.md):
        # - the index of the events by endpoint goes: every stored event paid for an entry
        #   in it, for the deletions of an endpoint alone, which find its events through
        #   the key instead, one seek per hour the application has events in
        #   (analytics_pg/rollups.py's ENDPOINT_EVENTS), as SQLite does;
        # - a pending entry (a few KB) stays in its row uncompressed up to a whole page:
        #   compressing it cost its insert, and decompressing it the fold that reads it
        #   once, more than the few KB it saved for half a second.
        """
        DROP INDEX events_endpoint;
        ALTER TABLE an_pending SET (toast_tuple_target = 8160);
        """,
    ),
]

FILL_PAGE = 20_000  # events read and added up at a time by fill_analytics


async def fill_analytics(conn: psycopg.AsyncConnection[Any]) -> None:
    """Add up the events stored before migration 8 into its rollups (opens included), a
    page of events at a time, in key order: the rollups take events in any order."""
    from homing_collector.analytics import rollups
    from homing_collector.storage import analytics_pg

    after: tuple[Any, ...] = ("", -(2**63), "", "", "", -(2**63))
    while True:
        cursor = await conn.execute(
            "SELECT app_id, endpoint_id, event_id, event_type, ts, arrival, session_id, body,"
            " hour FROM events WHERE (app_id, hour, endpoint_id, event_id, event_type, ts)"
            " > (%s, %s, %s, %s, %s, %s) ORDER BY app_id, hour, endpoint_id, event_id,"
            " event_type, ts LIMIT %s",
            (*after, FILL_PAGE),
        )
        page = await cursor.fetchall()
        if not page:
            return
        # Without the subjects' locks: no collector that keeps rollups writes before this
        # commits (they wait for the migration's lock), and a lock per user and endpoint
        # held until the end would fill the server's lock table.
        await analytics_pg.call(conn, rollups.apply, [row[:8] for row in page], subject_locks=False)
        last = page[-1]
        after = (last[0], last[8], last[1], last[2], last[3], last[4])


# Migrations that go on in Python, in the transaction of their SQL: version -> what runs.
_FILLS = {8: fill_analytics}


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
            fill = _FILLS.get(version)
            if fill is not None:
                await fill(conn)
            await conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                (version, datetime.now(timezone.utc).isoformat()),
            )
            current = version
    return current
