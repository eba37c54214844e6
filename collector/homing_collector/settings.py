"""Settings: command-line flags > HOMING_* environment variables > defaults."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from homing_collector.campaigns.triggers import SEND_WINDOW
from homing_collector.push.messages import MAX_TTL_SECONDS
from homing_collector.quotas import MAX_QUOTA

QUOTAS = ("quota_key_requests", "quota_key_events", "quota_app_requests", "quota_app_events")


def database_path(raw: str) -> Path:
    """The SQLite file that `--db` or HOMING_DB names: a path, or a `sqlite:` URL.

    >>> database_path("sqlite:///var/lib/homing/homing.db")
    PosixPath('/var/lib/homing/homing.db')
    """
    scheme, colon, rest = raw.partition(":")
    if not colon or len(scheme) < 2 or not scheme.replace("+", "").isalnum():
        return Path(raw)  # a plain path (C:\\... on Windows has a one-letter "scheme")
    if scheme.lower() == "sqlite":
        return Path(rest.removeprefix("//") or ".")
    if postgres_url(raw):
        raise ValueError(
            "db_path: a PostgreSQL URL names no SQLite file; give the path of a SQLite file "
            "or a sqlite: URL"
        )
    raise ValueError(
        f"db_path: {scheme}: URLs name no database this collector can use; give the path of "
        "a SQLite file, a sqlite: URL or a postgresql:// URL"
    )


def postgres_url(raw: str) -> bool:
    """Whether `--db` or HOMING_DB names a PostgreSQL database (a postgresql:// URL)."""
    scheme, colon, _ = raw.partition(":")
    return bool(colon) and scheme.lower() in ("postgresql", "postgres")


def redacted(url: str) -> str:
    """`url` without its password, to be printed or logged.

    >>> redacted("postgresql://homing:secret@db.example/homing")
    'postgresql://homing@db.example/homing'
    """
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("homing-collector")) / "homing.db"


@dataclass(frozen=True)
class Settings:
    db_path: Path
    # The PostgreSQL database to use instead of the SQLite file (a postgresql:// URL):
    # several collectors may share it.
    db_url: str | None = None
    # On PostgreSQL, LISTEN for queued pushes on a connection of its own; off, poll for
    # them instead (behind a pooler in transaction mode, which drops what LISTEN asked).
    pg_listen: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    # SQLite's synchronous pragma. NORMAL survives a killed process, FULL a lost power supply.
    synchronous: str = "NORMAL"
    # Writes waiting for the disk before new ones are answered 429 with Retry-After.
    max_pending_writes: int = 4096
    # Seconds that in-flight requests get to finish on SIGTERM.
    shutdown_timeout: float = 30.0
    # Adds a route that parses PutEvents bodies without storing them, for benchmarks.
    bench_routes: bool = False
    # Server processes sharing the port and the database file.
    workers: int = 1
    # Push: unacknowledged messages kept per endpoint (the oldest beyond are dropped), the
    # seconds between heartbeats on an idle push stream, and the TTL of a push that names
    # none, in seconds.
    push_queue_limit: int = 100
    push_heartbeat: float = 20.0
    push_default_ttl: int = MAX_TTL_SECONDS
    # Analytics rollups kept at ingest; off only to measure what they cost.
    rollups: bool = True
    # A columnar copy of sealed events, which the funnel and filtered event queries read
    # with DuckDB (storage/columnar.py); off: they read the events table alone.
    columnar: bool = True
    # On PostgreSQL, the directory of this collector's own columnar copy (Parquet files
    # and the state of what they hold, storage/pg_columnar.py); None: under the user's
    # cache directory, named by a hash of the database URL (`columnar_directory`).
    columnar_dir: Path | None = None
    # Quotas per second: each key, and each application as a whole (see quotas.py). The
    # defaults are out of reach of a small deployment; an application may have its own.
    quota_key_requests: int = 2_500
    quota_key_events: int = 250_000
    quota_app_requests: int = 5_000
    quota_app_events: int = 500_000
    # The directory whose files CreateImportJob may name with a file:// S3Url; None: none.
    import_dir: Path | None = None
    # The file of the key that seals SigV4 secrets in the database (see sealing.py); None:
    # they are stored in clear. Every command that creates or reads secrets reads it.
    secrets_key_file: Path | None = None
    # The directory (and those inside it) that event streams may write to as file://
    # destinations; None allows none.
    stream_dir: Path | None = None
    # Seconds a webhook receiver has to answer one call: a campaign's FILTER hook (Pinpoint
    # gave it 15 s, for each of 3 attempts), a custom channel, an event stream.
    hook_timeout: float = 15.0
    # Whether hooks may be plain http:// URLs to any host; by default only to loopback.
    hooks_allow_http: bool = False
    # Seconds from a busy send pass of event-triggered campaigns to the next: under load,
    # the matches of a window are committed together and reach a custom channel in calls
    # of up to 50 endpoints (campaigns/triggers.py); a lone match goes at once.
    trigger_window: float = SEND_WINDOW

    def __post_init__(self) -> None:
        synchronous = self.synchronous.upper()
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be normal or full, not {self.synchronous!r}")
        object.__setattr__(self, "synchronous", synchronous)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be from 0 to 65535, not {self.port}")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers must be from 1 to 64, not {self.workers}")
        if self.max_pending_writes < 1:
            raise ValueError("max_pending_writes must be 1 or more")
        if not (math.isfinite(self.shutdown_timeout) and self.shutdown_timeout >= 0):
            raise ValueError("shutdown_timeout must be a number of seconds, 0 or more")
        if not 1 <= self.push_queue_limit <= 100_000:
            raise ValueError("push_queue_limit must be from 1 to 100000")
        if not 0.05 <= self.push_heartbeat <= 3600:
            raise ValueError("push_heartbeat must be from 0.05 to 3600 seconds")
        for name in QUOTAS:
            if not 1 <= getattr(self, name) <= MAX_QUOTA:
                raise ValueError(f"{name} must be from 1 to {MAX_QUOTA:,} per second")
        if self.import_dir is not None and not self.import_dir.is_dir():
            raise ValueError(f"import_dir must be an existing directory, not {self.import_dir}")
        if self.stream_dir is not None:
            if not self.stream_dir.is_absolute():
                raise ValueError(f"stream_dir must be an absolute path, not {self.stream_dir}")
            object.__setattr__(self, "stream_dir", Path(os.path.normpath(self.stream_dir)))
        if not (math.isfinite(self.hook_timeout) and 0.1 <= self.hook_timeout <= 60):
            raise ValueError("hook_timeout must be from 0.1 to 60 seconds")
        if not (math.isfinite(self.trigger_window) and 0 <= self.trigger_window <= 5):
            raise ValueError("trigger_window must be from 0 to 5 seconds")
        if not 0 <= self.push_default_ttl <= MAX_TTL_SECONDS:
            raise ValueError(
                f"push_default_ttl must be from 0 to {MAX_TTL_SECONDS} seconds (28 days)"
            )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, serve: bool = True, **flags: object
    ) -> Settings:
        """Build settings from flags that were given (not None), then the environment.

        Only `serve` reads the server's variables, so a bad HOMING_PORT never stops
        `apps list`; every command reads HOMING_DB and HOMING_SECRETS_KEY_FILE.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "db_path": default_db_path(),
        }
        if env.get("HOMING_SECRETS_KEY_FILE"):
            values["secrets_key_file"] = Path(env["HOMING_SECRETS_KEY_FILE"])
        sources: dict[str, str] = {}  # setting -> where its value came from, for errors
        raw_db = flags.get("db_path") or env.get("HOMING_DB")
        if raw_db:
            source = "--db" if flags.get("db_path") else f"HOMING_DB={redacted(str(raw_db))!r}"
            try:
                if postgres_url(str(raw_db)):
                    values["db_url"] = str(raw_db)
                else:
                    values["db_path"] = database_path(str(raw_db))
            except ValueError as exc:
                raise ValueError(f"{exc} (from {source})") from None
        for name, kind in _SERVE_VARIABLES if serve else ():
            variable = f"HOMING_{name.upper()}"
            raw = env.get(variable)
            if raw:
                try:
                    values[name] = kind(raw)
                except ValueError:
                    raise ValueError(f"{variable}={raw!r} is not a valid {name}") from None
                sources[name] = f"{variable}={raw!r}"
        for name, value in flags.items():
            if value is not None and name != "db_path":
                values[name] = Path(str(value)) if name in _PATHS else value
                sources[name] = "--" + name.replace("_", "-")
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError as exc:
            # Each rule's message starts with the name of the setting it is about.
            source = sources.get(str(exc).split(" ", 1)[0], "a flag or a HOMING_* variable")
            raise ValueError(f"{exc} (from {source})") from None

    @property
    def columnar_directory(self) -> Path | None:
        """Where a collector on PostgreSQL keeps its columnar copy; None on SQLite (its copy
        is beside the database file)."""
        if self.db_url is None:
            return None
        if self.columnar_dir is not None:
            return self.columnar_dir
        from homing_collector.storage.pg_columnar import default_directory

        return default_directory(Path(platformdirs.user_cache_dir("homing-collector")), self.db_url)

    @property
    def database(self) -> str:
        """The database in use, as it may be printed: a path, or a URL with no password."""
        return redacted(self.db_url) if self.db_url else str(self.db_path)


_PATHS = ("import_dir", "secrets_key_file", "stream_dir", "columnar_dir")


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_SERVE_VARIABLES: tuple[tuple[str, Callable[[str], object]], ...] = (
    ("host", str),
    ("port", int),
    ("synchronous", str),
    ("max_pending_writes", int),
    ("shutdown_timeout", float),
    ("workers", int),
    ("push_queue_limit", int),
    ("push_heartbeat", float),
    ("push_default_ttl", int),
    ("rollups", _flag),
    ("columnar", _flag),
    ("columnar_dir", Path),
    *((name, int) for name in QUOTAS),
    ("import_dir", Path),
    ("stream_dir", Path),
    ("hook_timeout", float),
    ("hooks_allow_http", _flag),
    ("trigger_window", float),
    ("pg_listen", _flag),
)
