"""homing-collector: run the collector and manage its applications and keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from homing import __version__
from homing_collector import sealing
from homing_collector.auth import NewKey, generate_key
from homing_collector.lifetime import end_with_parent
from homing_collector.routes.apps import new_app
from homing_collector.sealing import SecretsKey, SecretsKeyError
from homing_collector.settings import QUOTAS, Settings, default_db_path
from homing_collector.storage.base import Storage, StorageError
from homing_collector.storage.events_process import start_shared
from homing_collector.storage.sqlite import SQLiteStorage, check_can_open

T = TypeVar("T")
logger = logging.getLogger("homing_collector")
_EVENTS_WRITER_STOP = 60.0  # seconds for the workers' events writer to exit after them


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        settings = Settings.from_env(
            serve=args.run is _serve,
            db_path=getattr(args, "db", None),
            secrets_key_file=getattr(args, "secrets_key_file", None),
            **_serve_flags(args),
        )
    except ValueError as exc:
        parser.error(str(exc))
    if settings.db_url is not None and not _postgres_installed():
        parser.error(
            f"--db: {settings.database} is a PostgreSQL database, and its driver is not "
            "installed: pip install 'homing[collector,postgres]'"
        )
    try:
        result: int = args.run(args, settings)
    except (_CannotOpen, SecretsKeyError) as exc:
        return _fail(str(exc))
    return result


def _serve_flags(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "host", "port", "synchronous", "bench_routes", "workers", "import_dir", "stream_dir",
        "columnar", "columnar_dir", *QUOTAS,
    )  # fmt: skip
    return {name: getattr(args, name, None) for name in names}


def _parser() -> argparse.ArgumentParser:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--db",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"the SQLite database (default: $HOMING_DB, else {default_db_path()}), or a "
        "postgresql:// URL",
    )
    parser = argparse.ArgumentParser(
        prog="homing-collector",
        description="A self-hosted collector that speaks Amazon Pinpoint's REST API.",
        parents=[db],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    # Every command that creates secrets, or reads them, takes the key that seals them.
    sealed = argparse.ArgumentParser(add_help=False)
    sealed.add_argument(
        "--secrets-key-file",
        metavar="PATH",
        help="the key that seals secret access keys in the database: 32 random bytes in "
        "base64 or hex, readable by its owner alone (default: $HOMING_SECRETS_KEY_FILE, "
        "else none: secrets are stored in clear)",
    )

    serve = commands.add_parser(
        "serve", parents=[db, sealed], help="run the collector", description="Run the collector."
    )
    serve.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on; 0 picks a free one (8080)")
    serve.add_argument(
        "--synchronous",
        choices=["normal", "full"],
        help="SQLite durability: normal survives a crash of the process (the default), "
        "full also survives a power cut",
    )
    serve.add_argument(
        "--bench-routes",
        action="store_true",
        default=None,
        help="add POST /v1/apps/{id}/events-parse-only, which parses and stores nothing "
        "(a ceiling for benchmarks; never in production)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="processes that share the port and the database (default: $HOMING_WORKERS, else 1)",
    )
    for name in QUOTAS:
        _, whose, what = name.split("_")
        serve.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            metavar="N",
            help=f"{what} per second that each {'key' if whose == 'key' else 'application'} "
            f"may send; past it, 429 with Retry-After (default: $HOMING_{name.upper()}, "
            f"else {getattr(Settings, name):,})",
        )
    serve.add_argument(
        "--import-dir",
        metavar="DIR",
        help="the directory whose files CreateImportJob may name as file:///PATH "
        "(default: $HOMING_IMPORT_DIR, else none: file:// URLs are refused)",
    )
    serve.add_argument(
        "--stream-dir",
        metavar="DIR",
        help="let event streams write hourly NDJSON files to file:// directories in DIR "
        "(default: $HOMING_STREAM_DIR, else none)",
    )
    serve.add_argument(
        "--no-columnar",
        dest="columnar",
        action="store_false",
        default=None,
        help="keep no columnar copy of events: funnels and filtered event counts read the "
        "events table alone (default: $HOMING_COLUMNAR, else a copy is kept)",
    )
    serve.add_argument(
        "--columnar-dir",
        metavar="DIR",
        help="on PostgreSQL, the directory of this collector's own columnar copy of events "
        "(default: $HOMING_COLUMNAR_DIR, else one under the user's cache directory, named by "
        "a hash of the database URL)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.add_argument("--no-access-log", action="store_true", help="do not log each request")
    serve.set_defaults(run=_serve)

    apps = commands.add_parser(
        "apps", parents=[db], help="create, list and delete applications",
        description="Create, list and delete applications.",
    )  # fmt: skip
    app_commands = apps.add_subparsers(title="commands", metavar="COMMAND", required=True)
    create = app_commands.add_parser(
        "create", parents=[db, sealed],
        help="create an application with an ingest and an admin key",
        description="Create an application with an ingest key and an admin key.",
    )  # fmt: skip
    create.add_argument("name", metavar="NAME")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(run=_apps_create)
    listing = app_commands.add_parser(
        "list", parents=[db], help="list applications", description="List applications."
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(run=_apps_list)
    delete = app_commands.add_parser(
        "delete", parents=[db], help="delete an application and all its data",
        description="Delete an application with its endpoints, events and keys.",
    )  # fmt: skip
    delete.add_argument("app_id", metavar="ID")
    delete.set_defaults(run=_apps_delete)

    retention = app_commands.add_parser(
        "retention", parents=[db], help="show or set how long raw events are kept",
        description="Show or set how many days an application keeps its raw events. "
        "Older events are deleted in the background by a running collector; the "
        "analytics rollups are kept, so the dashboard's history stays.",
    )  # fmt: skip
    retention.add_argument("app_id", metavar="APP", help="the application id")
    keep = retention.add_mutually_exclusive_group()
    keep.add_argument("--days", type=int, metavar="N", help="keep raw events N days")
    keep.add_argument("--forever", action="store_true", help="keep raw events forever")
    retention.set_defaults(run=_apps_retention)

    keys = commands.add_parser(
        "keys", parents=[db], help="create, list and revoke keys",
        description="Create, list and revoke credentials.",
    )  # fmt: skip
    key_commands = keys.add_subparsers(title="commands", metavar="COMMAND", required=True)
    key_create = key_commands.add_parser(
        "create", parents=[db, sealed], help="create a key",
        description="Create a key: --app ID with --role ingest|admin, or --root.",
    )  # fmt: skip
    key_create.add_argument("--app", metavar="ID", help="the application the key belongs to")
    key_create.add_argument("--role", choices=["ingest", "admin"], default="ingest")
    key_create.add_argument("--root", action="store_true", help="a root key, to manage apps")
    key_create.add_argument("--json", action="store_true", help="print one JSON object")
    key_create.set_defaults(run=_keys_create)
    key_list = key_commands.add_parser(
        "list", parents=[db], help="list keys (never their secrets)",
        description="List keys, without their secrets.",
    )  # fmt: skip
    key_list.add_argument("--app", metavar="ID", help="only this application's keys")
    key_list.add_argument("--json", action="store_true", help="print a JSON array")
    key_list.set_defaults(run=_keys_list)
    revoke = key_commands.add_parser(
        "revoke", parents=[db], help="revoke a key; it stops working at once",
        description="Revoke a key. It stops working at once, also for a running server.",
    )  # fmt: skip
    revoke.add_argument("access_key_id", metavar="ACCESS_KEY_ID")
    revoke.set_defaults(run=_keys_revoke)

    segments = commands.add_parser(
        "segments", parents=[db], help="import segments from files",
        description="Import endpoints from files, as imported segments.",
    )  # fmt: skip
    segment_commands = segments.add_subparsers(title="commands", metavar="COMMAND", required=True)
    segment_import = segment_commands.add_parser(
        "import", parents=[db], help="import a CSV or JSON file of endpoints as a segment",
        description="Import a file of endpoint definitions, in Pinpoint's CSV or "
        "newline-delimited JSON format: store the endpoints and define an imported segment "
        "of them (or a new version of one, with --segment). Runs here, against the "
        "database, whether or not the collector is running; exits 1 if the job FAILED.",
    )  # fmt: skip
    segment_import.add_argument("app_id", metavar="APP", help="the application id")
    segment_import.add_argument("file", metavar="FILE", help="the file to import")
    segment_import.add_argument(
        "--name", metavar="N", help="the new segment's name (default: the file's name)"
    )
    segment_import.add_argument(
        "--segment", metavar="ID", help="make a new version of this imported segment instead"
    )
    segment_import.add_argument(
        "--format",
        type=str.upper,
        choices=["CSV", "JSON"],
        help="the file's format (default: JSON for .json, .jsonl and .ndjson files, else CSV)",
    )
    segment_import.add_argument(
        "--json", action="store_true", help="print the ImportJobResponse as one JSON object"
    )
    segment_import.set_defaults(run=_segments_import)
    hooks = commands.add_parser(
        "hooks", parents=[db], help="list and replay dead-lettered webhook deliveries",
        description="List and replay webhook and event-stream deliveries that were given "
        "up on (dead letters).",
    )  # fmt: skip
    hook_commands = hooks.add_subparsers(title="commands", metavar="COMMAND", required=True)
    dead = hook_commands.add_parser(
        "dead-letters", parents=[db], help="list an application's dead letters",
        description="List an application's dead letters, oldest first.",
    )  # fmt: skip
    dead.add_argument("app_id", metavar="APP")
    dead.add_argument("--json", action="store_true", help="print a JSON array")
    dead.set_defaults(run=_hooks_dead_letters)
    replay = hook_commands.add_parser(
        "replay", parents=[db], help="try dead letters again",
        description="Make dead letters pending again, with a fresh retry budget; a running "
        "collector delivers them. A destination that answered 410 is enabled again.",
    )  # fmt: skip
    replay.add_argument("app_id", metavar="APP")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("delivery_id", metavar="ID", nargs="?", help="the dead letter's id")
    which.add_argument("--all", action="store_true", help="every dead letter of APP")
    replay.set_defaults(run=_hooks_replay)

    imports = commands.add_parser(
        "import", parents=[db], help="import Pinpoint history: events and endpoints",
        description="Import history exported from Amazon Pinpoint into an application.",
    )  # fmt: skip
    import_commands = imports.add_subparsers(title="commands", metavar="COMMAND", required=True)
    import_events = import_commands.add_parser(
        "pinpoint-events", parents=[db],
        help="import event-stream archives (what Kinesis Firehose wrote to S3)",
        description="Import Pinpoint event-stream archives: files of JSON records, gzip or "
        "plain, one record per line or concatenated, or directories of them. Each record "
        "is stored as the event PutEvents would have stored, with its endpoint and the "
        "analytics rollups; an event already stored is not stored again. Refused records "
        "are reported as FILE:LINE: field: rule on stderr. Exits 1 if any record or "
        "endpoint update was refused, else 0.",
    )  # fmt: skip
    import_events.add_argument("app_id", metavar="APP", help="the application id")
    import_events.add_argument("paths", metavar="PATH", nargs="+", help="files or directories")
    import_events.set_defaults(run=_import_pinpoint_events)
    import_endpoints = import_commands.add_parser(
        "pinpoint-endpoints", parents=[db],
        help="import Pinpoint's endpoint export (newline-delimited JSON)",
        description="Import a file of endpoint definitions, one JSON object per line (gzip "
        "or plain), as Pinpoint's export jobs write them: each is merged into the stored "
        "endpoint as UpdateEndpoint does. Refused rows are reported as FILE:LINE: field: "
        "rule on stderr. Exits 1 if any row was refused, else 0.",
    )  # fmt: skip
    import_endpoints.add_argument("app_id", metavar="APP", help="the application id")
    import_endpoints.add_argument("file", metavar="FILE", help="the file to import")
    import_endpoints.set_defaults(run=_import_pinpoint_endpoints)

    exports = commands.add_parser(
        "export", parents=[db], help="export events as Pinpoint event-stream records",
        description="Export an application's history.",
    )  # fmt: skip
    export_commands = exports.add_subparsers(title="commands", metavar="COMMAND", required=True)
    export_events = export_commands.add_parser(
        "events", parents=[db], help="write events as Pinpoint event-stream records",
        description="Write the application's events, from --since up to (not including) "
        "--until, as Pinpoint event-stream records, one JSON object per line; "
        "`import pinpoint-events` reads them back.",
    )  # fmt: skip
    export_events.add_argument("app_id", metavar="APP", help="the application id")
    export_events.add_argument(
        "--since", metavar="T", help="the first moment, such as 2026-01-01 or "
        "2026-01-01T12:00:00Z (default: the beginning)",
    )  # fmt: skip
    export_events.add_argument(
        "--until", metavar="T", help="the moment after the last (default: no end)"
    )
    export_events.add_argument(
        "--out", metavar="FILE", default="-",
        help="the file to write, gzip if its name ends in .gz; - is stdout (the default)",
    )  # fmt: skip
    export_events.set_defaults(run=_export_events)

    demo = commands.add_parser(
        "demo", parents=[db, sealed], help="create an application full of simulated data",
        description="Create an application with its keys and load simulated data into it: "
        "devices, users, sessions, custom events, purchases, late uploads and push "
        "campaigns over the last days, so that the dashboard has something to show.",
    )  # fmt: skip
    demo.add_argument("--devices", type=int, default=500, metavar="N",
                      help="simulated devices (default: 500)")  # fmt: skip
    demo.add_argument("--days", type=int, default=60, metavar="N",
                      help="days of data, ending today (default: 60)")  # fmt: skip
    demo.add_argument("--seed", type=int, default=1, metavar="S",
                      help="the same seed gives the same data (default: 1)")  # fmt: skip
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.set_defaults(run=_demo)

    migrate_db = commands.add_parser(
        "migrate-db", help="copy a SQLite database into PostgreSQL",
        description="Copy every application, key, endpoint, event, rollup, push queue, "
        "segment, campaign, import job and hook of a SQLite database into a PostgreSQL "
        "database, in batches. The source is opened read-only. Killed or stopped, the same "
        "command goes on where it stopped. Exit codes: 0 copied and counted, 1 refused or "
        "failed, 3 copied, but some tables PostgreSQL lacks were not (listed).",
    )  # fmt: skip
    migrate_db.add_argument("--from", dest="source", metavar="PATH", required=True,
                            help="the SQLite database to copy")  # fmt: skip
    migrate_db.add_argument("--to", dest="target", metavar="URL", required=True,
                            help="the PostgreSQL database: postgresql://HOST/NAME")  # fmt: skip
    migrate_db.add_argument(
        "--into-existing", action="store_true",
        help="add the source's applications to a database that already holds others "
        "(default: the target must be empty, or hold a copy of this same source)",
    )  # fmt: skip
    migrate_db.add_argument(
        "--batch-rows", type=int, default=10_000, metavar="N",
        help="rows per batch, each committed with its progress (default: 10000)",
    )  # fmt: skip
    migrate_db.add_argument("--json", action="store_true", help="print the summary as JSON")
    migrate_db.set_defaults(run=_migrate_db)

    secrets = commands.add_parser(
        "secrets", parents=[db], help="seal, rotate and open the stored secret access keys",
        description="Seal the secret access keys stored in the database with a key file "
        "(AES-256-GCM), move them to a new key file, or store them in clear again. Each "
        "command rewrites every key in one transaction: all or nothing.",
    )  # fmt: skip
    secret_commands = secrets.add_subparsers(title="commands", metavar="COMMAND", required=True)
    new_key = secret_commands.add_parser(
        "new-key", parents=[db], help="write a new random key file, readable by its owner alone",
        description="Write 32 random bytes, in base64, to a new file of mode 0600. Refuses "
        "to overwrite a file.",
    )  # fmt: skip
    new_key.add_argument("path", metavar="PATH", help="the key file to create")
    new_key.set_defaults(run=_secrets_new_key)
    encrypt = secret_commands.add_parser(
        "encrypt", parents=[db, sealed], help="seal the secrets stored in clear",
        description="Seal every secret access key stored in clear with the key file. Safe "
        "while the collector runs with the same key file.",
    )  # fmt: skip
    encrypt.set_defaults(run=_secrets_encrypt)
    rotate = secret_commands.add_parser(
        "rotate", parents=[db, sealed], help="reseal every secret with a new key file",
        description="Open every secret access key with the current key file and seal it "
        "with the new one; afterwards only the new one opens them. Stop the collector first, "
        "and start it again with the new key file.",
    )  # fmt: skip
    rotate.add_argument(
        "--new-key-file", metavar="PATH", required=True, help="the key file to seal them with"
    )
    rotate.set_defaults(run=_secrets_rotate)
    decrypt = secret_commands.add_parser(
        "decrypt", parents=[db, sealed], help="store the secrets in clear again",
        description="Open every sealed secret access key with the key file and store it in "
        "clear. Stop the collector first, and start it again without a key file.",
    )  # fmt: skip
    decrypt.set_defaults(run=_secrets_decrypt)
    return parser


class _CannotOpen(Exception):
    """The database file cannot be opened: a one-line message, not a traceback."""


def _check_database(settings: Settings) -> None:
    """Open the database once, so that a path that cannot hold one, or a file that is not
    one, is reported in a line before any work starts."""
    try:
        check_can_open(settings.db_path)
    except (OSError, StorageError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _CannotOpen(f"cannot open the database {settings.db_path}: {reason}") from None


def _with_storage(
    settings: Settings,
    work: Callable[[Storage], Awaitable[T]],
    *,
    events_process: bool = False,
) -> T:
    """Run `work` on the database that settings name: a SQLite file, or PostgreSQL (whose
    schema it migrates, as a collector starting would). `events_process` writes SQLite's
    events in a process of their own, as `serve` does."""
    if settings.db_url is not None:
        return _with_postgres(settings, work)
    _check_database(settings)

    async def run() -> T:
        storage = SQLiteStorage(
            settings.db_path, synchronous=settings.synchronous, events_process=events_process
        )
        await storage.start()
        try:
            return await work(storage)
        finally:
            await storage.close()

    return asyncio.run(run())


def _with_postgres(settings: Settings, work: Callable[[Storage], Awaitable[T]]) -> T:
    async def run() -> T:
        from homing_collector.storage.postgres import PostgresStorage

        storage = PostgresStorage(str(settings.db_url), max_connections=2, listen=False)
        try:
            await storage.start()
        except (OSError, StorageError, _postgres_error()) as exc:
            raise _CannotOpen(f"cannot open the database {settings.database}: {exc}") from None
        try:
            return await work(storage)
        finally:
            await storage.close()

    return asyncio.run(run())


def _postgres_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("psycopg", "psycopg_pool"))


def _postgres_error() -> type[Exception]:
    import psycopg

    return psycopg.Error


def _secrets_key(settings: Settings) -> SecretsKey | None:
    path = settings.secrets_key_file
    return None if path is None else SecretsKey.load(path)


async def _check_secrets(storage: Storage, key: SecretsKey | None, *, warn: bool = True) -> None:
    """Refuse to add secrets to a database whose sealed ones `key` does not open, so that
    one database never holds secrets sealed with two keys, or clear and sealed by mistake."""
    clear = sealing.check([(k.access_key_id, k.secret) for k in await storage.list_keys()], key)
    if warn and clear and key is not None:
        print(
            f"homing-collector: {clear} secret access keys are still stored in clear; seal "
            "them with: homing-collector secrets encrypt",
            file=sys.stderr,
        )


def _fail(message: str) -> int:
    print(f"homing-collector: {message}", file=sys.stderr)
    return 1


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from homing_collector.app import create_app
    from homing_collector.metrics import Board

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # The format above names no process or thread, so do not look them up for every record
    # (one access-log record per request): a getpid() system call each time, among others.
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    # httpx logs each webhook call at INFO; the outbox logs what goes wrong itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.no_access_log:
        logging.getLogger("homing_collector.access").setLevel(logging.WARNING)
    _raise_file_limit()
    key = _secrets_key(settings)
    # The app checks again as it starts; here a wrong key file is one line, not a traceback.
    _with_storage(settings, lambda storage: _check_secrets(storage, key, warn=False))
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that name TCP, and without
    # it an answer sent in two writes (head, then body) waits ~40 ms for a delayed ACK.
    # Several workers get a socket each on one port (SO_REUSEPORT), so that the kernel
    # spreads connections over them; on one shared socket the first to wake takes them all.
    sockets: list[socket.socket] = []
    port = settings.port
    try:
        if settings.workers > 1:
            # SO_REUSEPORT would also let this group join another server's on the same
            # port, and split the traffic between two databases: first make sure the port
            # is free, with a socket that does not share it.
            with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((settings.host, port))
                port = probe.getsockname()[1]
        for _ in range(settings.workers):
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if settings.workers > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((settings.host, port))
            sock.listen(2048)
            port = sock.getsockname()[1]
    except OSError as exc:
        for sock in sockets:
            sock.close()
        return _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}")
    host = f"[{settings.host}]" if family == socket.AF_INET6 else settings.host
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
    )
    banner = f"Homing collector listening on http://{host}:{port} (database {settings.database})"

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                # Only now: the database is open and SIGTERM means a graceful stop, so a
                # supervisor that waits for this line may signal the server at any time.
                print(banner, flush=True)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # uvicorn waits for open connections before the app's own shutdown, and a push
            # stream never ends by itself: end them first, so that a stop is prompt.
            app.state.push.close_streams()
            sweeper = asyncio.create_task(self._close_late_connections())
            try:
                await super().shutdown(sockets=sockets)
            finally:
                sweeper.cancel()

        async def _close_late_connections(self) -> None:
            # uvicorn asks each open connection to close once. A connection accepted just
            # before the listening socket closed joins after that (asyncio sets it up in a
            # task of its own), and it would serve a busy client for as long as the client
            # kept sending: with --workers, clients that lose one worker land on another
            # as it stops. Ask again, until uvicorn is done waiting.
            while True:
                await asyncio.sleep(0.1)
                for connection in list(self.server_state.connections):
                    transport = getattr(connection, "transport", None)
                    if transport is not None and not transport.is_closing():
                        connection.shutdown()

    # A PutEvents batch is thousands of objects, freed by reference counting once it is
    # answered. At CPython's default threshold (700 allocations) the cyclic collector scans
    # the batches still waiting for their commit over and over; collect far less often, and
    # leave the objects of startup out of every pass.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    # uvicorn stops on SIGTERM and SIGINT: it stops accepting, lets requests in flight
    # finish, then the app's shutdown commits every queued write. Afterwards it raises the
    # signal again for the handler it found; that stop was clean, so ours exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    if len(sockets) == 1:
        Server(config).run(sockets=sockets)
        return 0
    # Mapped before the fork, so every worker sees the others' counts: each scrape of
    # /metrics reaches one worker, and it answers for all of them.
    board = Board(len(sockets))
    # One events writer for every worker: two that took turns on the database would each
    # find the pages the other changed gone from their cache, and commit less at a time.
    writer, ends = _shared_events_writer(app.state.storage, len(sockets))

    def run_worker(slot: int, own: list[socket.socket]) -> None:
        app.state.metrics.share(board, slot)
        if ends:
            app.state.storage.use_events_writer(own[1])
        Server(config).run(sockets=[own[0]])

    own = [[sock, *ends[slot : slot + 1]] for slot, sock in enumerate(sockets)]
    try:
        return _run_workers(own, run_worker)
    finally:
        if writer is not None:
            _reap_events_writer(writer)


def _shared_events_writer(
    storage: Storage, workers: int
) -> tuple[subprocess.Popen[bytes] | None, list[socket.socket]]:
    """The events writer that the workers share, if SQLite's events go to one, and each
    worker's end of its connection to it."""
    if not isinstance(storage, SQLiteStorage) or not storage.wants_events_process:
        return None, []
    try:
        return start_shared(storage.path, storage.synchronous, workers, rollups=storage.rollups)
    except OSError:
        logger.exception("The shared events writer did not start; each worker starts its own")
        return None, []


def _reap_events_writer(writer: subprocess.Popen[bytes]) -> None:
    """Wait for the shared events writer, which stops once every worker has closed its
    connection to it (it ignores the signals that stop them)."""
    try:
        writer.wait(_EVENTS_WRITER_STOP)
    except subprocess.TimeoutExpired:
        logger.error("The events writer process did not stop; killing it")
        writer.kill()
        writer.wait()


def _raise_file_limit() -> None:
    """Every push stream holds a socket: allow as many open files as the system lets us."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run_workers(
    sockets: list[list[socket.socket]], run: Callable[[int, list[socket.socket]], None]
) -> int:
    """Fork a server for each list of sockets (its listening socket, and any other of its
    own); pass signals on; wait for all. `run` gets the worker's number, from 0, and its
    sockets: each worker closes the others', and this process all of them.

    Each worker has its own event loop and writer thread, so the work spreads over the
    cores; SQLite's WAL lets their writers take turns on the one file. Their PutEvents
    batches go to one events writer that they share (see _serve).
    """
    children: list[int] = []
    parent = os.getpid()
    for slot, mine in enumerate(sockets):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                # A worker must not outlive its supervisor, even one killed with SIGKILL:
                # on Linux the kernel then sends the worker SIGTERM, a graceful stop.
                end_with_parent(parent, signal.SIGTERM)
                for others in sockets:
                    if others is not mine:
                        for other in others:
                            other.close()
                run(slot, mine)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                logging.getLogger("homing_collector").exception("worker failed")
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        children.append(pid)
    for own in sockets:
        for sock in own:
            sock.close()

    def forward(signum: int, frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    failed = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        failed += os.waitstatus_to_exitcode(status) != 0
    return 1 if failed else 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _apps_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        app = new_app(args.name)
    except ValueError as exc:
        return _fail(str(exc))
    key = _secrets_key(settings)
    ingest = generate_key("ingest", app.id, secrets_key=key)
    admin = generate_key("admin", app.id, secrets_key=key)

    async def work(storage: Storage) -> None:
        await _check_secrets(storage, key)
        await storage.create_app(app)
        await storage.create_key(ingest.record)
        await storage.create_key(admin.record)

    _with_storage(settings, work)
    if args.json:
        print(json.dumps({
            "application_id": app.id, "name": app.name,
            "ingest": ingest.credentials(), "admin": admin.credentials(),
        }))  # fmt: skip
    else:
        print(f"Created application {app.name!r}: {app.id}\n")
        _print_key("Ingest key (embed in apps; sends events only)", ingest)
        _print_key("Admin key (backends; full access to this app)", admin)
        print("Secrets are shown once. Keep the admin key out of apps you ship.")
    return 0


def _print_key(title: str, key: NewKey) -> None:
    creds = key.credentials()
    print(f"{title}:")
    print(f"  access key id:     {creds['access_key_id']}")
    print(f"  secret access key: {creds['secret_access_key']}")
    print(f"  bearer token:      {creds['token']}\n")


def _apps_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(storage: Storage) -> list[Any]:
        return await storage.list_apps(after=None, limit=1_000_000)

    apps = _with_storage(settings, work)
    if args.json:
        print(json.dumps([{"application_id": a.id, "name": a.name, "created_at": a.created_at}
                          for a in apps]))  # fmt: skip
    elif not apps:
        print("No applications yet. Create one with: homing-collector apps create NAME")
    else:
        for app in apps:
            print(f"{app.id}  {app.created_at}  {app.name}")
    return 0


def _apps_delete(args: argparse.Namespace, settings: Settings) -> int:
    async def work(storage: Storage) -> Any:
        return await storage.delete_app(args.app_id)

    if _with_storage(settings, work) is None:
        return _fail(f"no application {args.app_id}")
    print(f"Deleted application {args.app_id} with its endpoints, events and keys.")
    return 0


def _keys_create(args: argparse.Namespace, settings: Settings) -> int:
    if args.root == bool(args.app):
        return _fail("give either --app ID (with --role) or --root")
    sealer = _secrets_key(settings)
    key = (
        generate_key("root", None, secrets_key=sealer)
        if args.root
        else generate_key(args.role, args.app, secrets_key=sealer)
    )

    async def work(storage: Storage) -> bool:
        await _check_secrets(storage, sealer)
        if args.app and await storage.get_app(args.app) is None:
            return False
        await storage.create_key(key.record)
        return True

    if not _with_storage(settings, work):
        return _fail(f"no application {args.app}")
    if args.json:
        print(json.dumps({"role": key.record.role, "application_id": key.record.app_id,
                          **key.credentials()}))  # fmt: skip
    else:
        _print_key(f"New {key.record.role} key", key)
    return 0


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(storage: Storage) -> list[Any]:
        return await storage.list_keys(args.app)

    keys = _with_storage(settings, work)
    rows = [
        {"access_key_id": k.access_key_id, "role": k.role, "application_id": k.app_id,
         "created_at": k.created_at, "revoked_at": k.revoked_at}
        for k in keys
    ]  # fmt: skip
    if args.json:
        print(json.dumps(rows))
    for row in [] if args.json else rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        print(f"{row['access_key_id']}  {row['role']:<6}  {row['application_id'] or '-':<32}  "
              f"{state}")  # fmt: skip
    return 0


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")

    async def work(storage: Storage) -> bool:
        return await storage.revoke_key(args.access_key_id, now)

    if not _with_storage(settings, work):
        return _fail(f"no active key {args.access_key_id}")
    print(f"Revoked {args.access_key_id}.")
    return 0


def _segments_import(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    import msgspec

    from homing.wire import WireError
    from homing_collector.campaigns import import_jobs
    from homing_collector.models.imports import ImportJobRequest
    from homing_collector.routes.imports import job_response

    path = Path(args.file)
    file_format = args.format or (
        "JSON" if path.suffix.lower() in (".json", ".jsonl", ".ndjson") else "CSV"
    )
    try:
        file = path.open("rb")
        size = os.fstat(file.fileno()).st_size
    except OSError as exc:
        return _fail(f"cannot read {path}: {exc.strerror}")
    if size > import_jobs.MAX_IMPORT_BYTES:
        file.close()
        return _fail(f"{path} is {size} bytes; an import is at most {import_jobs.MAX_IMPORT_BYTES}")
    request = ImportJobRequest(
        Format=file_format,  # type: ignore[arg-type]
        S3Url=path.resolve().as_uri(),
        RoleArn="",
        DefineSegment=args.segment is None,
        SegmentId=args.segment,
        SegmentName=None if args.segment else (args.name or path.name),
    )
    if args.segment and args.name:
        request.SegmentName = args.name
    tty = sys.stderr.isatty() and not args.json

    async def work(storage: Storage) -> str | Any:
        if await storage.get_app(args.app_id) is None:
            return f"no application {args.app_id}"
        try:
            plan = await import_jobs.plan(storage, args.app_id, request)
        except WireError as exc:
            return f"--segment: {exc.rule}" if exc.field == "SegmentId" else str(exc)
        job = import_jobs.new_job(args.app_id, plan, size)
        await storage.create_import_job(job)
        task = asyncio.create_task(import_jobs.run(storage, job, plan, file))
        while not task.done():
            await asyncio.wait([task], timeout=1)
            if tty:
                print(f"\r{job.total_processed:,} rows read, {job.status}", end="", file=sys.stderr)
        if tty:
            print(file=sys.stderr)
        return job

    try:
        result = _with_storage(settings, work)
    finally:
        file.close()
    if isinstance(result, str):
        return _fail(result)
    response = job_response(result)
    if args.json:
        print(msgspec.json.encode(response).decode())
    else:
        good = result.total_processed - result.total_failures
        print(f"Import job {result.id}: {result.status}")
        print(f"  {good:,} of {result.total_processed:,} rows imported from {path}")
        if result.segment_id and result.status == "COMPLETED":
            print(f"  segment {result.segment_id}")
        if result.failures:
            print("Failures:")
            for message in result.failures:
                print(f"  {message}")
            more = result.total_failures - len(result.failures)
            if more > 0:
                print(f"  ... and {more:,} more rows refused")
    return 0 if result.status == "COMPLETED" else 1


def _hooks_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    async def work(storage: Storage) -> list[Any] | None:
        if await storage.get_app(args.app_id) is None:
            return None
        found: list[Any] = []
        while True:
            after = found[-1].seq if found else 0
            page = await storage.dead_letters(args.app_id, after=after, limit=1000)
            found += page
            if len(page) < 1000:
                return found

    letters = _with_storage(settings, work)
    if letters is None:
        return _fail(f"no application {args.app_id}")
    rows = [
        {"id": d.id, "destination": d.destination, "attempts": d.attempts,
         "created_at": _iso(d.created_at), "dead_at": _iso(d.dead_at),
         "last_error": d.last_error}
        for d in letters
    ]  # fmt: skip
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print(f"No dead letters for application {args.app_id}.")
    for row in [] if args.json else rows:
        print(f"{row['id']}  {row['dead_at']}  {row['attempts']:>3} attempts  "
              f"{row['destination']}  {row['last_error'] or ''}")  # fmt: skip
    return 0


def _hooks_replay(args: argparse.Namespace, settings: Settings) -> int:
    import time

    async def work(storage: Storage) -> int | None:
        if await storage.get_app(args.app_id) is None:
            return None
        ids = None if args.all else [args.delivery_id]
        return await storage.replay_dead_letters(args.app_id, ids, time.time())

    count = _with_storage(settings, work)
    if count is None:
        return _fail(f"no application {args.app_id}")
    if count == 0 and not args.all:
        return _fail(f"no dead letter {args.delivery_id} in application {args.app_id}")
    print(f"Replaying {count} dead letter{'s' if count != 1 else ''}: a running collector "
          "delivers them.")  # fmt: skip
    return 0


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from homing_collector import demo

    try:
        options = demo.DemoOptions(devices=args.devices, days=args.days, seed=args.seed)
    except ValueError as exc:
        return _fail(str(exc))
    app = new_app("Homing Shop (demo)")
    key = _secrets_key(settings)
    ingest = generate_key("ingest", app.id, secrets_key=key)
    admin = generate_key("admin", app.id, secrets_key=key)

    async def work(storage: Storage) -> demo.DemoSummary:
        await _check_secrets(storage, key)
        await storage.create_app(app)
        await storage.create_key(ingest.record)
        await storage.create_key(admin.record)
        return await demo.load(storage, app.id, options)

    if not args.json:
        print(f"Simulating {args.devices} devices over {args.days} days...", flush=True)
    summary = _with_storage(settings, work)
    try:  # where `serve` will listen, with the same environment
        listen = Settings.from_env(db_path=settings.db_path)
    except ValueError:
        listen = settings
    url = f"http://{listen.host}:{listen.port}/dashboard?app={app.id}"
    if args.json:
        print(json.dumps({
            "application_id": app.id, "name": app.name, "dashboard": url,
            "ingest": ingest.credentials(), "admin": admin.credentials(),
            "summary": dataclasses.asdict(summary),
        }))  # fmt: skip
        return 0
    print(
        f"Created application {app.name!r}: {app.id}\n"
        f"Loaded {summary.events:,} events from {summary.devices:,} devices of "
        f"{summary.users:,} users, {summary.first_day} to {summary.last_day}: "
        f"{summary.purchases:,} purchases, {summary.late_events:,} events uploaded late, "
        f"{summary.pushes_sent:,} pushes sent.\n"
    )
    _print_key("Admin key (sign in to the dashboard with its bearer token)", admin)
    _print_key("Ingest key", ingest)
    print("Start the collector with the same database, then open the dashboard:")
    print(f"  homing-collector --db {settings.database} serve")
    print(f"  {url}")
    return 0


def _migrate_db(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from homing_collector.migrate_db import migrate_db
    from homing_collector.progress import Progress
    from homing_collector.storage.sqlite_to_pg import MigrateError

    if args.batch_rows < 1:
        return _fail("--batch-rows must be 1 or more")
    progress = Progress()
    try:
        summary = migrate_db(
            Path(args.source),
            args.target,
            into_existing=args.into_existing,
            batch_rows=args.batch_rows,
            progress=progress,
            warn=lambda line: progress.message(f"homing-collector: warning: {line}"),
        )
    except MigrateError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(summary.as_json()))
    else:
        print(f"{'Resumed' if summary.resumed else 'Copied'} {summary.source} into "
              f"{summary.target} in {summary.seconds:.1f} s:")  # fmt: skip
        print(f"  {'table':<22} {'source':>12} {'copied':>12} {'this run':>12} {'rows/s':>10}"
              f" {'in target':>12}")  # fmt: skip
        for t in summary.tables:
            rate = f"{t.this_run / t.seconds:,.0f}" if t.this_run and t.seconds else "-"
            counted = "-" if t.target_rows is None else f"{t.target_rows:,}"
            print(f"  {t.name:<22} {t.source_rows:>12,} {t.copied:>12,} {t.this_run:>12,} "
                  f"{rate:>10} {counted:>12}")  # fmt: skip
        for name, rows in summary.not_copied.items():
            print(f"  {name:<22} {rows:>12,}  NOT COPIED: PostgreSQL has no such table")
        for t in summary.tables:
            if t.source_only:
                print(f"  {t.name}: columns not copied (PostgreSQL lacks them): "
                      f"{', '.join(t.source_only)}")  # fmt: skip
        print(f"  Not copied by design: {', '.join(summary.skipped)}.")
    if summary.mismatched:
        return _fail(
            "the target's row counts differ from the source's in "
            f"{', '.join(summary.mismatched)}: was the target written to during the copy?"
        )
    if summary.not_copied:
        print(
            f"homing-collector: {len(summary.not_copied)} tables were not copied: this "
            f"PostgreSQL schema lacks them ({', '.join(summary.not_copied)})",
            file=sys.stderr,
        )
        return 3
    return 0


def _apps_retention(args: argparse.Namespace, settings: Settings) -> int:
    from homing_collector.retention import MAX_DAYS

    if args.days is not None and not 1 <= args.days <= MAX_DAYS:
        return _fail(f"--days must be from 1 to {MAX_DAYS}")
    change = args.days is not None or args.forever
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")

    async def work(storage: Storage) -> tuple[bool, int | None]:
        if await storage.get_app(args.app_id) is None:
            return False, None
        if change:
            return True, await storage.update_retention(args.app_id, args.days, now)
        return True, await storage.get_retention(args.app_id)

    exists, days = _with_storage(settings, work)
    if not exists:
        return _fail(f"no application {args.app_id}")
    kept = "forever" if days is None else f"for {days} days"
    print(f"Application {args.app_id} keeps its raw events {kept}; rollups are kept forever.")
    return 0


def _import_pinpoint_events(args: argparse.Namespace, settings: Settings) -> int:
    from homing_collector import history
    from homing_collector.progress import Progress

    try:
        files = history.archive_files(args.paths)
    except history.ArchiveError as exc:
        return _fail(str(exc))
    progress = Progress()

    def show(stats: history.ImportStats) -> None:
        read = stats.bytes_done + stats.bytes_in_file
        rate = stats.records / max(1e-9, time.monotonic() - stats.started)
        progress.update(
            f"{stats.records:,} records, {stats.stored:,} stored, {stats.refused:,} refused "
            f"({rate:,.0f}/s), file {stats.files} of {len(files)}",
            read / stats.bytes_total if stats.bytes_total else None,
        )

    def report(refusal: history.Refusal) -> None:
        progress.message(str(refusal))

    async def work(storage: Storage) -> history.ImportStats | None:
        if await storage.get_app(args.app_id) is None:
            return None
        return await history.import_events(
            storage, args.app_id, files, report=report, progress=show
        )

    try:
        # Events are written, and their rollups kept, by a process of their own (as `serve`
        # does), while this one reads and checks the next batch.
        stats = _with_storage(settings, work, events_process=True)
    except OSError as exc:
        progress.done()
        return _fail(f"cannot read {exc.filename}: {exc.strerror}")
    except StorageError as exc:  # the disk is full, say; what was stored stays stored
        progress.done()
        return _fail(f"the import stopped: {exc}; run it again to store the rest")
    progress.done()
    if stats is None:
        return _fail(f"no application {args.app_id}")
    seconds = time.monotonic() - stats.started
    print(
        f"Read {stats.records:,} records from {stats.files:,} "
        f"file{'' if stats.files == 1 else 's'} in {seconds:.1f} s: "
        f"{stats.stored:,} events stored, {stats.duplicates:,} already stored, "
        f"{stats.expired:,} older than the retention period (not stored), "
        f"{stats.refused:,} records refused, {stats.endpoints_refused:,} endpoint updates "
        "refused."
    )
    return 1 if stats.refused or stats.endpoints_refused else 0


def _import_pinpoint_endpoints(args: argparse.Namespace, settings: Settings) -> int:
    import gzip
    import re
    from functools import partial

    from homing import limits
    from homing.wire import format_timestamp
    from homing_collector import endpoints
    from homing_collector.campaigns.import_files import ImportReader
    from homing_collector.progress import Progress

    path = args.file
    try:
        raw = open(path, "rb")  # noqa: SIM115 (closed below, after the work)
        size = os.fstat(raw.fileno()).st_size
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
    except OSError as exc:
        return _fail(f"cannot read {path}: {exc.strerror}")
    source: Any = gzip.GzipFile(fileobj=raw) if compressed else raw
    reader = ImportReader(source, "JSON")
    progress = Progress()
    counts = {"rows": 0, "stored": 0, "refused": 0}
    row_prefix = re.compile(r"^row (\d+): ")

    def refuse(line: int | str, message: str) -> None:
        counts["refused"] += 1
        progress.message(f"{path}:{line}: {message}")

    async def work(storage: Storage) -> bool:
        if await storage.get_app(args.app_id) is None:
            return False
        merge = partial(endpoints.merge, args.app_id, now=format_timestamp(time.time()))
        done = False
        while not done:
            good, bad, done = await asyncio.to_thread(reader.batch, 500)
            for message in bad:
                match = row_prefix.match(message)
                refuse(match.group(1) if match else "?", message[match.end() if match else 0 :])
            refused = await storage.import_endpoints(
                args.app_id, "", good, merge=merge,
                max_user_endpoints=limits.MAX_ENDPOINTS_PER_USER, register=True, members=False,
            ) if good else []  # fmt: skip
            for row, message in refused:
                refuse(row.row, message)
            counts["rows"] += len(good) + len(bad)
            counts["stored"] += len(good) - len(refused)
            progress.update(
                f"{counts['rows']:,} rows, {counts['stored']:,} endpoints stored, "
                f"{counts['refused']:,} refused", raw.tell() / size if size else None,
            )  # fmt: skip
        return True

    try:
        found = _with_storage(settings, work)
    except (OSError, EOFError, ValueError) as exc:  # a truncated gzip file, or not UTF-8
        progress.done()
        return _fail(f"cannot read {path}: {exc}")
    finally:
        raw.close()
    progress.done()
    if not found:
        return _fail(f"no application {args.app_id}")
    print(
        f"Read {counts['rows']:,} rows from {path}: {counts['stored']:,} endpoints stored, "
        f"{counts['refused']:,} refused."
    )
    return 1 if counts["refused"] else 0


def _moment_ms(value: str | None, option: str, default: int) -> int:
    from homing.wire import WireError, parse_timestamp

    if value is None:
        return default
    try:
        return int(parse_timestamp(value, option).timestamp() * 1000)
    except WireError as exc:
        raise ValueError(str(exc)) from None


def _export_events(args: argparse.Namespace, settings: Settings) -> int:
    import gzip

    from homing_collector import history
    from homing_collector.progress import Progress

    try:
        lo_ms = _moment_ms(args.since, "--since", 0)
        hi_ms = _moment_ms(args.until, "--until", 1 << 62)
    except ValueError as exc:
        return _fail(str(exc))
    if hi_ms <= lo_ms:
        return _fail("--until must be after --since")
    progress = Progress()

    async def work(storage: Storage) -> int | None:
        if await storage.get_app(args.app_id) is None:
            return None
        if args.out == "-":
            out: Any = contextlib.nullcontext(sys.stdout.buffer)
        elif args.out.endswith(".gz"):
            out = gzip.open(args.out, "wb", compresslevel=6)  # noqa: SIM115
        else:
            out = open(args.out, "wb")  # noqa: SIM115 (a context manager below)
        with out as stream:
            written = await history.export_events(
                storage, args.app_id, lo_ms, hi_ms, stream,
                progress=lambda count: progress.update(f"{count:,} events written"),
            )  # fmt: skip
        return written

    try:
        count = _with_storage(settings, work)
    except OSError as exc:
        progress.done()
        return _fail(f"cannot write {args.out}: {exc.strerror}")
    progress.done()
    if count is None:
        return _fail(f"no application {args.app_id}")
    print(f"Exported {count:,} events.", file=sys.stderr if args.out == "-" else sys.stdout)
    return 0


def _secrets_new_key(args: argparse.Namespace, settings: Settings) -> int:
    try:
        fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return _fail(f"cannot create {args.path}: {exc.strerror}")
    with os.fdopen(fd, "w") as file:
        file.write(sealing.new_key_text())
    print(f"Wrote a new secrets key to {args.path}. Keep a copy apart from the database.")
    return 0


def _needs_key(settings: Settings, command: str) -> SecretsKey:
    key = _secrets_key(settings)
    if key is None:
        raise SecretsKeyError(
            f"secrets {command} needs the key file: --secrets-key-file PATH or "
            "HOMING_SECRETS_KEY_FILE"
        )
    return key


def _rewrite(settings: Settings, rewrite: Callable[[str, str], str]) -> tuple[int, int]:
    """Rewrite every stored secret; return (how many changed, how many there are)."""

    async def work(storage: Storage) -> tuple[int, int]:
        changed = await storage.rewrite_secrets(rewrite)
        return changed, len(await storage.list_keys())

    return _with_storage(settings, work)


def _secrets_encrypt(args: argparse.Namespace, settings: Settings) -> int:
    key = _needs_key(settings, "encrypt")

    def seal(access_key_id: str, stored: str) -> str:
        if sealing.is_sealed(stored):
            key.open(stored, access_key_id)  # one key for all: it must open those too
            return stored
        return key.seal(stored, access_key_id)

    changed, total = _rewrite(settings, seal)
    print(f"Sealed {changed} of {total} secret access keys with {key.source}.")
    return 0


def _secrets_rotate(args: argparse.Namespace, settings: Settings) -> int:
    current = _needs_key(settings, "rotate")
    new = SecretsKey.load(args.new_key_file)

    def reseal(access_key_id: str, stored: str) -> str:
        return new.seal(current.open(stored, access_key_id), access_key_id)

    changed, _ = _rewrite(settings, reseal)
    print(
        f"Resealed {changed} secret access keys with {new.source}; {current.source} no longer "
        "opens them. Start the collector with the new key file."
    )
    return 0


def _secrets_decrypt(args: argparse.Namespace, settings: Settings) -> int:
    key = _secrets_key(settings)
    changed, total = _rewrite(
        settings, lambda access_key_id, stored: sealing.reveal(stored, access_key_id, key)
    )
    print(
        f"Stored {changed} secret access keys in clear again ({total} in all). Start the "
        "collector without a key file."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
