"""Versioned, forward-only schema migrations for SQLite.

Append a new (version, sql) pair to change the schema; never edit one that shipped.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

SQLITE_MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE apps (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        CREATE TABLE keys (
            access_key_id TEXT PRIMARY KEY,
            app_id TEXT REFERENCES apps(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('ingest', 'admin', 'root')),
            secret TEXT NOT NULL,
            token_sha256 TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        );
        CREATE INDEX keys_app ON keys(app_id);
        CREATE TABLE endpoints (
            app_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            user_id TEXT,
            body TEXT NOT NULL,
            PRIMARY KEY (app_id, endpoint_id)
        ) WITHOUT ROWID;
        CREATE INDEX endpoints_user ON endpoints(app_id, user_id) WHERE user_id IS NOT NULL;
        CREATE TABLE events (
            app_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            ts INTEGER NOT NULL,
            arrival INTEGER NOT NULL,
            session_id TEXT,
            body BLOB NOT NULL,
            UNIQUE (app_id, endpoint_id, event_id)
        );
        CREATE TABLE event_types (
            app_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (app_id, event_type)
        ) WITHOUT ROWID;
        """,
    ),
    (
        2,
        """
        CREATE TABLE push_messages (
            app_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            message_id TEXT NOT NULL,
            silent INTEGER NOT NULL,
            payload TEXT NOT NULL,
            campaign_id TEXT,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            delivered_at INTEGER,
            PRIMARY KEY (app_id, endpoint_id, seq)
        );
        CREATE INDEX push_messages_id ON push_messages(app_id, message_id);
        CREATE INDEX push_messages_pending ON push_messages(app_id, endpoint_id, seq)
            WHERE delivered_at IS NULL;
        CREATE INDEX push_messages_expiry ON push_messages(expires_at)
            WHERE delivered_at IS NULL;
        CREATE INDEX push_messages_created ON push_messages(created_at)
            WHERE delivered_at IS NULL;
        CREATE TABLE push_endpoints (
            app_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            last_seq INTEGER NOT NULL,
            dropped INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (app_id, endpoint_id)
        ) WITHOUT ROWID;
        """,
    ),
    (
        3,
        # Analytics rollups, kept by homing_collector.analytics.rollups.
        """
        CREATE TABLE an_active (
            app_id TEXT NOT NULL,
            kind INTEGER NOT NULL,
            hour INTEGER NOT NULL,
            key TEXT NOT NULL,
            PRIMARY KEY (app_id, kind, hour, key)
        ) WITHOUT ROWID;
        CREATE INDEX an_active_key ON an_active(app_id, kind, key, hour);
        CREATE TABLE an_subjects (
            app_id TEXT NOT NULL,
            kind INTEGER NOT NULL,
            key TEXT NOT NULL,
            first_hour INTEGER NOT NULL,
            last_hour INTEGER NOT NULL,
            PRIMARY KEY (app_id, kind, key)
        ) WITHOUT ROWID;
        CREATE INDEX an_subjects_first ON an_subjects(app_id, kind, first_hour);
        CREATE TABLE an_counts (
            app_id TEXT NOT NULL,
            hour INTEGER NOT NULL,
            event_type TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (app_id, hour, event_type)
        ) WITHOUT ROWID;
        CREATE TABLE an_metrics (
            app_id TEXT NOT NULL,
            hour INTEGER NOT NULL,
            event_type TEXT NOT NULL,
            name TEXT NOT NULL,
            count INTEGER NOT NULL,
            sum REAL NOT NULL,
            min REAL NOT NULL,
            max REAL NOT NULL,
            PRIMARY KEY (app_id, hour, event_type, name)
        ) WITHOUT ROWID;
        CREATE TABLE an_revenue (
            app_id TEXT NOT NULL,
            hour INTEGER NOT NULL,
            currency TEXT NOT NULL,
            purchases INTEGER NOT NULL,
            amount REAL NOT NULL,
            PRIMARY KEY (app_id, hour, currency)
        ) WITHOUT ROWID;
        CREATE TABLE an_sessions (
            app_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            start_ms INTEGER NOT NULL,
            stop_ms INTEGER NOT NULL,
            PRIMARY KEY (app_id, endpoint_id, session_id)
        ) WITHOUT ROWID;
        CREATE INDEX an_sessions_start ON an_sessions(app_id, start_ms);
        CREATE TABLE an_cover (
            app_id TEXT NOT NULL,
            kind INTEGER NOT NULL,
            span INTEGER NOT NULL,
            hour INTEGER NOT NULL,
            delta INTEGER NOT NULL,
            PRIMARY KEY (app_id, kind, span, hour)
        ) WITHOUT ROWID;
        CREATE TABLE an_retention (
            app_id TEXT NOT NULL,
            kind INTEGER NOT NULL,
            phase INTEGER NOT NULL,
            cohort INTEGER NOT NULL,
            day_offset INTEGER NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (app_id, kind, phase, cohort, day_offset)
        ) WITHOUT ROWID;
        CREATE TABLE an_visits (
            app_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            start_ms INTEGER NOT NULL,
            stop_ms INTEGER NOT NULL,
            PRIMARY KEY (app_id, endpoint_id, start_ms)
        ) WITHOUT ROWID;
        CREATE TABLE an_visit_hours (
            app_id TEXT NOT NULL,
            hour INTEGER NOT NULL,
            count INTEGER NOT NULL,
            total_ms INTEGER NOT NULL,
            PRIMARY KEY (app_id, hour)
        ) WITHOUT ROWID;
        CREATE TABLE an_visit_lengths (
            app_id TEXT NOT NULL,
            hour INTEGER NOT NULL,
            bucket INTEGER NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (app_id, hour, bucket)
        ) WITHOUT ROWID;
        """,
    ),
    (
        4,
        # Campaign analytics read the notification opens of a date range. Only those rows
        # are indexed, so other events cost nothing more to store; a query must name the
        # type as this literal for SQLite to use the index.
        """
        CREATE INDEX events_opens ON events(app_id, ts)
            WHERE event_type = '_campaign.opened_notification';
        """,
    ),
    (
        5,
        # The user keys an endpoint's activity was counted under before its user changed,
        # kept by homing_collector.analytics.rollups for when the endpoint is deleted.
        """
        CREATE TABLE an_user_keys (
            app_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            key TEXT NOT NULL,
            PRIMARY KEY (app_id, endpoint_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX an_user_keys_key ON an_user_keys(app_id, key);
        """,
    ),
    (
        6,
        # Events found by time: the key (app, UTC hour, endpoint, event id, type,
        # Timestamp) is unique, so a resent event is stored once, and a new key lands
        # among those of its hour and endpoint (a device's batch goes to one or two places)
        # instead of into an index of every event ever stored. A range of days is a range
        # of the key; the key holds what a funnel reads but the body. Rows go in the order
        # they arrive, so those of an hour lie together. Events stored before are copied
        # in key order. (See homing_collector.storage.events.)
        """
        CREATE TABLE events_by_hour (
            app_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            ts INTEGER NOT NULL,
            arrival INTEGER NOT NULL,
            session_id TEXT,
            body BLOB NOT NULL,
            hour INTEGER NOT NULL
        );
        INSERT INTO events_by_hour (app_id, endpoint_id, event_id, event_type, ts, arrival,
            session_id, body, hour)
            SELECT app_id, endpoint_id, event_id, event_type, ts, arrival, session_id, body,
                ts / 3600000 - (ts < 0 AND ts % 3600000 != 0) AS hour
            FROM events ORDER BY app_id, hour, endpoint_id, event_id, event_type, ts;
        DROP TABLE events;
        ALTER TABLE events_by_hour RENAME TO events;
        CREATE UNIQUE INDEX events_key
            ON events(app_id, hour, endpoint_id, event_id, event_type, ts);
        CREATE INDEX events_opens ON events(app_id, ts)
            WHERE event_type = '_campaign.opened_notification';
        """,
    ),
    (
        7,
        # Segments, kept by homing_collector.storage.segments: the segment, and each of
        # its versions with the request that made it. And each application's settings
        # (UpdateApplicationSettings), as JSON.
        """
        CREATE TABLE segments (
            app_id TEXT NOT NULL,
            segment_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (app_id, segment_id)
        ) WITHOUT ROWID;
        CREATE TABLE segment_versions (
            app_id TEXT NOT NULL,
            segment_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            request TEXT NOT NULL,
            PRIMARY KEY (app_id, segment_id, version)
        ) WITHOUT ROWID;
        CREATE TABLE app_settings (
            app_id TEXT PRIMARY KEY,
            settings TEXT NOT NULL,
            modified_at TEXT NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        8,
        # Device credentials: the SHA-256 of the secret bound to one endpoint, which its
        # push stream and acks then need (homing_collector.device).
        """
        CREATE TABLE device_credentials (
            app_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            secret_sha256 TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (app_id, endpoint_id)
        ) WITHOUT ROWID;
        """,
    ),
    (
        9,
        # Campaigns (homing_collector.storage.campaigns): each version's request, as
        # segments keep theirs; one activity per run, which is also the scheduler's job,
        # held by one process at a time through its lease; and one row per endpoint and
        # activity, written with the endpoint's push, so that no endpoint gets a run's
        # message twice.
        """
        CREATE TABLE campaigns (
            app_id TEXT NOT NULL,
            campaign_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            segment_id TEXT NOT NULL,
            state TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '{}',
            planned_ms INTEGER,
            finished INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (app_id, campaign_id)
        ) WITHOUT ROWID;
        CREATE INDEX campaigns_segment ON campaigns(app_id, segment_id);
        CREATE TABLE campaign_versions (
            app_id TEXT NOT NULL,
            campaign_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            request TEXT NOT NULL,
            PRIMARY KEY (app_id, campaign_id, version)
        ) WITHOUT ROWID;
        CREATE TABLE campaign_activities (
            app_id TEXT NOT NULL,
            campaign_id TEXT NOT NULL,
            activity_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            scheduled_ms INTEGER NOT NULL,
            state TEXT NOT NULL,
            started_at TEXT,
            ended_at TEXT,
            result TEXT,
            cursor TEXT,
            not_before_ms INTEGER NOT NULL,
            lease_owner TEXT,
            lease_until_ms INTEGER,
            total INTEGER NOT NULL DEFAULT 0,
            successful INTEGER NOT NULL DEFAULT 0,
            metrics TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (app_id, campaign_id, activity_id),
            UNIQUE (app_id, campaign_id, scheduled_ms)
        );
        CREATE INDEX campaign_activities_open ON campaign_activities(state, not_before_ms)
            WHERE state IN ('PENDING', 'RUNNING');
        CREATE TABLE campaign_sends (
            app_id TEXT NOT NULL,
            campaign_id TEXT NOT NULL,
            activity_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            status TEXT NOT NULL,
            treatment_id TEXT,
            at_ms INTEGER NOT NULL,
            message_id TEXT,
            PRIMARY KEY (app_id, campaign_id, activity_id, endpoint_id)
        ) WITHOUT ROWID;
        CREATE INDEX campaign_sends_endpoint
            ON campaign_sends(app_id, campaign_id, endpoint_id, at_ms);
        """,
    ),
    (
        10,
        # Import jobs (CreateImportJob, the upload route, `segments import`), kept by
        # homing_collector.storage.imports: each job with its progress, and the endpoint
        # ids each job imported, which are the members of the imported segment it defined.
        # `owner` and `heartbeat` say which process runs a job that is not finished, so
        # that one left behind by a crash is marked FAILED.
        """
        CREATE TABLE import_jobs (
            app_id TEXT NOT NULL,
            job_id TEXT NOT NULL,
            segment_id TEXT,
            created_at TEXT NOT NULL,
            definition TEXT NOT NULL,
            status TEXT NOT NULL,
            total_pieces INTEGER NOT NULL,
            completed_pieces INTEGER NOT NULL DEFAULT 0,
            failed_pieces INTEGER NOT NULL DEFAULT 0,
            total_processed INTEGER NOT NULL DEFAULT 0,
            total_failures INTEGER NOT NULL DEFAULT 0,
            failures TEXT NOT NULL DEFAULT '[]',
            completed_at TEXT,
            owner TEXT NOT NULL,
            heartbeat INTEGER NOT NULL,
            PRIMARY KEY (app_id, job_id)
        ) WITHOUT ROWID;
        CREATE INDEX import_jobs_by_segment ON import_jobs(app_id, segment_id, job_id);
        CREATE TABLE import_members (
            app_id TEXT NOT NULL,
            job_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            channel TEXT,
            PRIMARY KEY (app_id, job_id, endpoint_id)
        ) WITHOUT ROWID;
        """,
    ),
    (
        11,
        # Hooks (homing_collector.storage.outbox): each application's signing secrets; the
        # durable outbox of outgoing calls, each claimed by one process at a time through
        # its lease; the destinations that answered 410; and each application's event
        # stream with its cursor, the rowid of the last event taken into the outbox.
        """
        CREATE TABLE hook_secrets (
            app_id TEXT PRIMARY KEY,
            current TEXT NOT NULL,
            previous TEXT,
            rotated_at TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            app_id TEXT NOT NULL,
            destination TEXT NOT NULL,
            ordered INTEGER NOT NULL DEFAULT 0,
            body BLOB NOT NULL,
            content_type TEXT NOT NULL,
            content_encoding TEXT,
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            first_attempt_at REAL,
            next_attempt_at REAL NOT NULL,
            lease_owner TEXT,
            lease_until REAL,
            last_error TEXT,
            finished_at REAL
        );
        CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE state = 'pending';
        CREATE INDEX outbox_queue ON outbox(app_id, destination, seq) WHERE state = 'pending';
        CREATE INDEX outbox_dead ON outbox(app_id, seq) WHERE state = 'dead';
        CREATE INDEX outbox_delivered ON outbox(finished_at) WHERE state = 'delivered';
        CREATE TABLE hook_destinations (
            app_id TEXT NOT NULL,
            destination TEXT NOT NULL,
            disabled_at REAL NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (app_id, destination)
        ) WITHOUT ROWID;
        CREATE TABLE event_streams (
            app_id TEXT PRIMARY KEY,
            destination TEXT NOT NULL,
            role_arn TEXT NOT NULL,
            last_modified TEXT NOT NULL,
            last_updated_by TEXT NOT NULL,
            cursor INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        12,
        # An application's own quotas (homing_collector.quotas), where the server's
        # defaults do not suit it: a JSON object of the ones it sets.
        """
        CREATE TABLE app_quotas (
            app_id TEXT PRIMARY KEY,
            quotas TEXT NOT NULL,
            modified_at TEXT NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        13,
        # History (homing_collector.storage.history): each application's retention period
        # for raw events, in days (no row: kept forever), and leases that let one process
        # of several on the database run a background task such as the retention sweep.
        """
        CREATE TABLE app_retention (
            app_id TEXT PRIMARY KEY,
            events_days INTEGER NOT NULL,
            modified_at TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE task_leases (
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            expires_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        14,
        # Campaigns' Session limit: the session of the event that triggered each send.
        """
        ALTER TABLE campaign_sends ADD COLUMN session_id TEXT;
        """,
    ),
    (
        15,
        # In-process event-stream hooks (homing_collector.hooks.hook_stream): each named
        # hook's durable cursor, the rowid of the last event it was given, over the events
        # of every application.
        """
        CREATE TABLE hook_cursors (
            name TEXT PRIMARY KEY,
            cursor INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        16,
        # The columnar copy of events (homing_collector.storage.columnar): the rowid up to
        # which events are copied, a count of deletions (a copy made across one is thrown
        # away), and the Parquet files of each application's sealed UTC days. The events
        # stored before are copied by the sealer in the background, day by day; until
        # then a query reads them from the events table.
        """
        CREATE TABLE columnar_state (
            id INTEGER PRIMARY KEY CHECK (id = 0),
            watermark INTEGER NOT NULL,
            generation INTEGER NOT NULL
        );
        INSERT INTO columnar_state (id, watermark, generation)
            SELECT 0, coalesce(max(rowid), 0), 0 FROM events;
        CREATE TABLE columnar_days (
            app_id TEXT NOT NULL,
            day INTEGER NOT NULL,
            files TEXT NOT NULL,
            PRIMARY KEY (app_id, day)
        ) WITHOUT ROWID;
        """,
    ),
    (
        17,
        # The demographic counters (homing_collector.storage.endpoint_values): per value
        # of each demographic dimension, its endpoints, those of them without a UserId,
        # and the distinct UserIds among the others. A value is stored as "=" and the
        # value, or "" for none. And the notification opens, by time
        # (homing_collector.analytics.opens). Both filled here from what was stored
        # before: the opens through the partial index events_opens, without reading the
        # other events. And the sessions of each endpoint by their start, that an open
        # looks up.
        """
        CREATE TABLE endpoint_values (
            app_id TEXT NOT NULL,
            dimension TEXT NOT NULL,
            value TEXT NOT NULL,
            endpoints INTEGER NOT NULL,
            anonymous INTEGER NOT NULL,
            users INTEGER NOT NULL,
            PRIMARY KEY (app_id, dimension, value)
        ) WITHOUT ROWID;
        WITH d(dimension, path) AS (VALUES
            ('platform', '$.Demographic.Platform'),
            ('platform_version', '$.Demographic.PlatformVersion'),
            ('app_version', '$.Demographic.AppVersion'),
            ('make', '$.Demographic.Make'),
            ('model', '$.Demographic.Model'),
            ('country', '$.Location.Country'),
            ('locale', '$.Demographic.Locale')
        ), facts AS (
            SELECT e.app_id, d.dimension, e.user_id,
                coalesce('=' || json_extract(e.body, d.path), '') AS value
            FROM endpoints e, d
        )
        INSERT INTO endpoint_values (app_id, dimension, value, endpoints, anonymous, users)
            SELECT app_id, dimension, value, count(*), count(*) - count(user_id),
                count(DISTINCT user_id)
            FROM facts GROUP BY app_id, dimension, value;
        CREATE TABLE an_opens (
            app_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            ts INTEGER NOT NULL,
            campaign_id TEXT
        );
        CREATE INDEX an_opens_ts ON an_opens(app_id, ts, endpoint_id, campaign_id);
        CREATE INDEX an_opens_endpoint ON an_opens(app_id, endpoint_id);
        CREATE INDEX an_sessions_endpoint_start ON an_sessions(app_id, endpoint_id, start_ms);
        INSERT INTO an_opens (app_id, endpoint_id, ts, campaign_id)
            SELECT app_id, endpoint_id, ts,
                json_extract(CAST(body AS TEXT), '$.Attributes.campaign_id')
            FROM events INDEXED BY events_opens
            WHERE event_type = '_campaign.opened_notification';
        """,
    ),
    (
        18,
        # A number for each endpoint of an application, given by the columnar copy's
        # sealer when it first copies an event of it; the Parquet files carry the number,
        # which a funnel joins and groups on where a string costs four times as much.
        """
        CREATE TABLE columnar_endpoints (
            app_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (app_id, endpoint_id)
        ) WITHOUT ROWID;
        CREATE UNIQUE INDEX columnar_endpoints_n ON columnar_endpoints(app_id, n);
        """,
    ),
    (
        19,
        # Reads that cost what their range costs, not what the database holds (issue 13).
        # - An open looks for the sessions of its endpoint near it among those that start
        #   on its day or the next (storage/analytics_sqlite/opens.py), in the part of the
        #   index that holds the range's days; by endpoint alone, each open read a page of
        #   its own anywhere in the index of every session ever. The index by day replaces
        #   the one by endpoint: a session costs the same to store. A query must spell the
        #   expression as it is here for SQLite to use the index.
        # - The messages queued in a range, from their time; they were read from all the
        #   application's messages.
        # - Each numbered endpoint's user beside its number, for a funnel by users
        #   (storage/columnar.py): the sealer sets it when it numbers an endpoint, and
        #   these triggers keep it equal to the endpoint's whatever writes the endpoint.
        """
        CREATE INDEX an_sessions_day
            ON an_sessions(app_id, start_ms / 86400000, endpoint_id, start_ms);
        DROP INDEX an_sessions_endpoint_start;
        CREATE INDEX push_messages_app_created ON push_messages(app_id, created_at);
        ALTER TABLE columnar_endpoints ADD COLUMN user_id TEXT;
        UPDATE columnar_endpoints SET user_id = e.user_id FROM endpoints e
            WHERE e.app_id = columnar_endpoints.app_id
            AND e.endpoint_id = columnar_endpoints.endpoint_id AND e.user_id IS NOT NULL;
        CREATE TRIGGER columnar_endpoints_user_inserted AFTER INSERT ON endpoints
            WHEN NEW.user_id IS NOT NULL
        BEGIN
            UPDATE columnar_endpoints SET user_id = NEW.user_id
                WHERE app_id = NEW.app_id AND endpoint_id = NEW.endpoint_id;
        END;
        CREATE TRIGGER columnar_endpoints_user_updated AFTER UPDATE OF user_id ON endpoints
            WHEN OLD.user_id IS NOT NEW.user_id
        BEGIN
            UPDATE columnar_endpoints SET user_id = NEW.user_id
                WHERE app_id = NEW.app_id AND endpoint_id = NEW.endpoint_id;
        END;
        CREATE TRIGGER columnar_endpoints_user_deleted AFTER DELETE ON endpoints
            WHEN OLD.user_id IS NOT NULL
        BEGIN
            UPDATE columnar_endpoints SET user_id = NULL
                WHERE app_id = OLD.app_id AND endpoint_id = OLD.endpoint_id;
        END;
        """,
    ),
    (
        20,
        # A new value of columnar_state.users_version whenever a numbered endpoint changes
        # users or its number goes: a funnel by users keeps each application's map of
        # endpoint numbers to users across queries while the version is the one it read
        # (storage/columnar.py), and reads only the endpoints numbered since (their
        # numbers are above every one before). Random rather than counted, so that
        # another database at the same path does not reach the same version with other
        # users.
        """
        ALTER TABLE columnar_state ADD COLUMN users_version INTEGER NOT NULL DEFAULT 0;
        UPDATE columnar_state SET users_version = random();
        CREATE TRIGGER columnar_endpoints_user_changed
            AFTER UPDATE OF user_id ON columnar_endpoints
            WHEN OLD.user_id IS NOT NEW.user_id
        BEGIN
            UPDATE columnar_state SET users_version = random();
        END;
        CREATE TRIGGER columnar_endpoints_unnumbered AFTER DELETE ON columnar_endpoints
        BEGIN
            UPDATE columnar_state SET users_version = random();
        END;
        """,
    ),
    (
        21,
        # What the transaction that stores events adds to the analytics rollups, appended
        # as one entry per batch and folded into the rollups later, many entries at once
        # (storage/analytics_sqlite/pending.py): the rollup rows every batch adds to are
        # written once per fold, not once per commit. The columns of PostgreSQL's
        # an_pending, which migrate-db copies them into.
        """
        CREATE TABLE an_pending (
            id INTEGER PRIMARY KEY,
            app_id TEXT NOT NULL,
            summary BLOB NOT NULL
        );
        """,
    ),
    (
        22,
        # Campaigns' send records keyed by endpoint first, then activity: the key finds an
        # endpoint's sends for its caps, which campaign_sends_endpoint did, so that index
        # goes, and a record dirties one page of the file rather than two. An event-
        # triggered campaign's records, whose activity holds the random event id, landed
        # on a page of their own in both. The DEFERRED records that a run sends at the
        # end of a quiet time are found by their own index, which holds nothing else.
        """
        CREATE TABLE campaign_sends_new (
            app_id TEXT NOT NULL,
            campaign_id TEXT NOT NULL,
            activity_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            status TEXT NOT NULL,
            treatment_id TEXT,
            at_ms INTEGER NOT NULL,
            message_id TEXT,
            session_id TEXT,
            PRIMARY KEY (app_id, campaign_id, endpoint_id, activity_id)
        ) WITHOUT ROWID;
        INSERT INTO campaign_sends_new (app_id, campaign_id, activity_id, endpoint_id, status,
            treatment_id, at_ms, message_id, session_id)
            SELECT app_id, campaign_id, activity_id, endpoint_id, status, treatment_id, at_ms,
                message_id, session_id
            FROM campaign_sends ORDER BY app_id, campaign_id, endpoint_id, activity_id;
        DROP TABLE campaign_sends;
        ALTER TABLE campaign_sends_new RENAME TO campaign_sends;
        CREATE INDEX campaign_sends_deferred
            ON campaign_sends(app_id, campaign_id, activity_id, at_ms) WHERE status = 'DEFERRED';
        """,
    ),
]


def statements(sql: str) -> list[str]:
    """The statements of a migration, in order: split at each ';' that ends one, not at
    those inside a trigger's body."""
    found: list[str] = []
    pending = ""
    for piece in sql.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                found.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        found.append(pending.strip())
    return found


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; return its version. `conn` is in autocommit mode."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    conn.execute("BEGIN IMMEDIATE")
    try:
        (current,) = conn.execute(
            "SELECT coalesce(max(version), 0) FROM schema_migrations"
        ).fetchone()
        for version, sql in SQLITE_MIGRATIONS:
            if version <= current:
                continue
            for statement in statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (version, datetime.now(timezone.utc).isoformat()),
            )
            current = version
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(current)
