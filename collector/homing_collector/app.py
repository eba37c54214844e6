from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from homing_collector import sealing
from homing_collector.campaigns.import_jobs import ImportRunner
from homing_collector.campaigns.scheduler import Clock, Scheduler, utc_now
from homing_collector.errors import PinpointError, error_response, request_id
from homing_collector.hooks.campaign import CampaignHooks
from homing_collector.hooks.hook_stream import HookStreams
from homing_collector.hooks.outbox import Outbox
from homing_collector.hooks.registry import Hooks, Registry
from homing_collector.hooks.runner import HookRunner
from homing_collector.hooks.stream_process import Part, StreamProcess
from homing_collector.hooks.streams import StreamPump
from homing_collector.metrics import Metrics
from homing_collector.openapi import document
from homing_collector.operation import bind
from homing_collector.pinpoint import unserved
from homing_collector.push.gateway import Gateway
from homing_collector.quotas import Quotas, Rates
from homing_collector.retention import Sweeper
from homing_collector.routes import (
    BENCH_OPERATIONS,
    EXTRA_SCHEMAS,
    OPERATIONS,
    PATH_PARAMETERS,
)
from homing_collector.sealer import Sealer
from homing_collector.settings import Settings
from homing_collector.storage import columnar
from homing_collector.storage.base import Overloaded, Storage, StorageFull, StorageUnavailable
from homing_collector.storage.sqlite import SQLiteStorage

if TYPE_CHECKING:
    from homing_collector.pg_sealer import PgSealer

logger = logging.getLogger("homing_collector")
# Seconds a client is asked to wait while the disk is full: space is freed by a person.
DISK_FULL_RETRY_AFTER = 30
access_logger = logging.getLogger("homing_collector.access")


def create_app(
    settings: Settings,
    storage: Storage | None = None,
    hooks: Hooks | Iterable[Hooks] | None = None,
    *,
    clock: Clock = utc_now,
) -> Starlette:
    """The collector as an ASGI app. `storage` defaults to SQLite at `settings.db_path`;
    `clock` is the campaign scheduler's (UTC, timezone-aware). `hooks` are in-process
    hooks (docs/hooks.md), called in this process beside those of the installed entry
    points of the group `homing_collector.hooks`, which each process loads as it starts.
    Raises sealing.SecretsKeyError if `settings.secrets_key_file` cannot be used, and
    ValueError or TypeError if `hooks` are not Hooks of distinct names."""
    secrets_key = (
        sealing.SecretsKey.load(settings.secrets_key_file) if settings.secrets_key_file else None
    )
    store: Storage = storage or default_storage(settings)

    metrics = Metrics()
    registry = Registry()
    registry.add_given(hooks)
    hook_runner = HookRunner(registry, metrics, timeout=settings.hook_timeout)
    # The in-process event-stream hooks run where the hooks were registered: objects
    # given here may exist in this process only.
    hook_streams = HookStreams(store, hook_runner)
    push = Gateway(
        store,
        metrics,
        heartbeat=settings.push_heartbeat,
        queue_limit=settings.push_queue_limit,
        default_ttl=settings.push_default_ttl,
        # Other processes may queue pushes for this one's streams: those of `serve
        # --workers`, and every other collector on a PostgreSQL database.
        shared=settings.workers > 1 or settings.db_url is not None,
    )
    # Webhook deliveries and event streams, in the background of every process; leases
    # in the database share the work between the processes of `serve --workers`.
    # It hands the calls of custom channels named `hook:NAME` to this process's hooks.
    # Event-stream records are made in a process of their own where the collector owns
    # its SQLite file (as `serve` does), so that making them never takes the GIL from
    # the event loop that answers PutEvents; in this process otherwise (on PostgreSQL too).
    # While that process runs, it makes the deliveries too, but those to this process's
    # in-process hooks.
    child: StreamProcess | None = None
    if (
        storage is None
        and os.name == "posix"
        and settings.db_url is None
        and isinstance(store, SQLiteStorage)
    ):
        child = StreamProcess(
            store, settings.db_path, settings.synchronous, metrics=metrics,
            hook_timeout=settings.hook_timeout,
        )  # fmt: skip
        source: Part | None = Part(store, lambda: True if child and child.running else None)
    else:
        source = None
    outbox = Outbox(
        store,
        metrics,
        timeout=settings.hook_timeout,
        lease=4 * max(settings.hook_timeout, 15),
        hooks=hook_runner,
        source=source,
    )
    # Campaigns ask their FILTER hooks (webhooks with the outbox's keys, or the in-process
    # hooks they name), and queue their custom channels' calls in the outbox.
    campaign_hooks = CampaignHooks(
        outbox.keys,
        timeout=settings.hook_timeout,
        wake=outbox.wake,
        metrics=metrics,
        runner=hook_runner,
    )
    scheduler = Scheduler(
        store, push, clock=clock, hooks=campaign_hooks, trigger_window=settings.trigger_window
    )

    imports = ImportRunner(store)
    sweeper = Sweeper(store)
    sealer: Sealer | PgSealer = Sealer(store)
    if store.name == "PostgreSQL":
        # Imported here: psycopg is needed only by those who use PostgreSQL.
        from homing_collector.pg_sealer import PgSealer
        from homing_collector.storage.postgres import PostgresStorage

        if isinstance(store, PostgresStorage):
            sealer = PgSealer(store)  # this collector's own copy (storage/pg_columnar.py)

    streams: StreamPump | StreamProcess = child or StreamPump(
        store, wake=outbox.wake, clock=outbox.clock
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.start()
        try:
            await _check_secrets(store, secrets_key)
        except BaseException:
            await store.close()
            raise
        # Here, not in create_app: with `serve --workers` each worker loads its own after
        # the fork, so a plugin's threads and connections are its own.
        registry.load_entry_points()
        hook_runner.count_load_errors()
        await imports.start()
        await push.start()
        await sweeper.start()
        await sealer.start()
        await scheduler.start()
        await outbox.start()
        await streams.start()
        await hook_streams.start()
        # With `serve --workers`, this worker's counts go where the others' scrapes see them.
        publisher = asyncio.create_task(metrics.publish_every()) if metrics.shared else None
        try:
            yield
        finally:
            await sweeper.close()
            await sealer.close()
            await imports.close()  # before the storage: they mark their jobs FAILED
            await scheduler.close()
            await streams.close()
            await hook_streams.close()
            await hook_runner.close()
            await outbox.close()
            await push.close()
            await store.close()  # every queued write is committed first
            if publisher is not None:
                publisher.cancel()
                metrics.publish()  # its last counts, for the workers still up

    operations = OPERATIONS + (BENCH_OPERATIONS if settings.bench_routes else [])
    routes = [Route(op.path, bind(op), methods=[op.method], name=op.name) for op in operations]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            PinpointError: _pinpoint_error,
            HTTPException: _http_error,
            Overloaded: _overloaded,
            StorageFull: _disk_full,
            StorageUnavailable: _unavailable,
            Exception: _unexpected_error,
        },
    )
    app.state.settings = settings
    app.state.storage = store
    app.state.secrets_key = secrets_key
    app.state.metrics = metrics
    app.state.quotas = Quotas(
        Rates(settings.quota_key_requests, settings.quota_key_events,
              settings.quota_app_requests, settings.quota_app_events)
    )  # fmt: skip
    app.state.push = push
    app.state.imports = imports
    app.state.retention = sweeper
    app.state.sealer = sealer
    app.state.scheduler = scheduler
    app.state.hooks = hook_runner  # its registry checks the hook:NAME that campaigns give
    app.state.outbox = outbox
    app.state.openapi = document(operations, PATH_PARAMETERS, EXTRA_SCHEMAS)
    app.add_middleware(_Observe, metrics=app.state.metrics)
    return app


def default_storage(settings: Settings) -> Storage:
    """The storage that `settings` name: the PostgreSQL database (without SQLite's writer
    process; its columnar copy is this collector's own), else the SQLite file."""
    if settings.db_url is not None:
        # Imported here: psycopg is needed only by those who use PostgreSQL.
        from homing_collector.storage.postgres import PostgresStorage

        return PostgresStorage(
            settings.db_url,
            max_pending=settings.max_pending_writes,
            listen=settings.pg_listen,
            rollups=settings.rollups,
            columnar=settings.columnar_directory if settings.columnar and _duckdb() else None,
        )
    return SQLiteStorage(
        settings.db_path,
        synchronous=settings.synchronous,
        max_pending=settings.max_pending_writes,
        events_process=True,
        rollups=settings.rollups,
        columnar_copy=settings.columnar and _duckdb(),
        columnar_process=True,
    )


def _duckdb() -> bool:
    if columnar.available():
        return True
    logger.warning(
        "DuckDB is not installed: no columnar copy of events is kept, and funnels read the "
        "events table (pip install 'homing[collector]', or HOMING_COLUMNAR=0 to say so)"
    )
    return False


async def _check_secrets(store: Storage, secrets_key: sealing.SecretsKey | None) -> None:
    """A sealed secret that this collector cannot open would fail every SigV4 request of
    its key: refuse to start instead."""
    stored = [(key.access_key_id, key.secret) for key in await store.list_keys()]
    clear = sealing.check(stored, secrets_key)
    if clear and secrets_key is not None:
        logger.warning(
            "%d secret access keys are still stored in clear: seal them with "
            "'homing-collector secrets encrypt'",
            clear,
        )


async def _pinpoint_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PinpointError)
    headers = {"Connection": "close"} if exc.body_unread else None
    return error_response(
        exc.status_code, exc.message, request_id(request), retry_after=exc.retry_after,
        headers=headers,
    )  # fmt: skip


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers: dict[str, str] = {}
    status, message = exc.status_code, str(exc.detail)
    if status in (404, 405):
        served = {getattr(route, "name", "") for route in request.app.routes}
        pinpoint = unserved(request.method, request.url.path, served)
        if pinpoint is not None:
            status = 404
            message = (
                f"{pinpoint.name} is an Amazon Pinpoint operation that Homing does not serve yet"
            )
        elif status == 404:
            message = f"No route matches {request.method} {request.url.path}"
        else:
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            message = (
                f"{request.method} is not allowed on {request.url.path}; "
                f"allowed: {', '.join(allowed)}"
            )
    return error_response(status, message, request_id(request), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path; the router looked at the first only."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


async def _overloaded(request: Request, exc: Exception) -> Response:
    return error_response(
        429, f"The collector is busy ({exc}); retry later", request_id(request), retry_after=1
    )


async def _unavailable(request: Request, exc: Exception) -> Response:
    return error_response(
        503, f"The collector could not store this ({exc}); retry later", request_id(request),
        retry_after=1,
    )  # fmt: skip


async def _disk_full(request: Request, exc: Exception) -> Response:
    return error_response(
        503, "The collector's disk is full: nothing of this request was stored; retry later",
        request_id(request), retry_after=DISK_FULL_RETRY_AFTER,
    )  # fmt: skip


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.error("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "Internal server error", request_id(request))


def _request_id() -> str:
    # A random UUID4 in hex, as uuid.uuid4().hex gives, but from `random`: a request id
    # must be unique, not secret, and os.urandom gives up the GIL, after which the event
    # loop may wait for the storage's writer thread to hand it back.
    bits = random.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48)
    return f"{bits | (0x4000 << 64) | (0x8000 << 48):032x}"


class _Observe:
    """Request ids, metrics and one structured access-log line per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id()
        scope["homing.request_id"] = rid
        started = time.perf_counter()
        status = 500
        body_bytes = 0

        async def receive_counted() -> Message:
            nonlocal body_bytes
            message = await receive()
            body_bytes += len(message.get("body", b""))
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                if not any(name == b"x-amzn-requestid" for name, _ in headers):
                    headers.append((b"x-amzn-RequestId", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive_counted, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.observe(template, scope["method"], status, elapsed, body_bytes)
            if access_logger.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_logger.info(
                    orjson.dumps(
                        {
                            "request_id": rid,
                            "method": scope["method"],
                            "path": scope["path"],
                            "route": template,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 3),
                            "client": client[0] if client else None,
                        }
                    ).decode()
                )
