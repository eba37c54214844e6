"""Event streams: every stored event of an application, as Pinpoint's event-stream
records, sent in gzip NDJSON batches through the outbox.

Each stream has a durable cursor over the events table: the rowid of the last event
taken. Events get rowids in the order their transactions commit, so a pass reads the
events after the cursor, makes them one batch, and in one transaction queues the batch
in the outbox and moves the cursor past it. A kill at any point loses nothing and
queues nothing twice. Batches are ordered deliveries: one at a time per application,
oldest first. The pump runs in the background, never in the ingest request, and stops
taking events for a stream whose receiver has fallen behind (they wait in the events
table) or whose destination answered 410 (until PutEventStream sets it again).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import unquote, urlsplit

import orjson

from homing_collector.hooks.delivery import ndjson_gzip_lines
from homing_collector.hooks.errors import HookConfigError
from homing_collector.hooks.outbox import Clock, Outbox
from homing_collector.hooks.payloads import check_web_url
from homing_collector.hooks.records import Records
from homing_collector.hooks.signing import new_message_id
from homing_collector.lifetime import stop
from homing_collector.storage.base import Delivery, NewDelivery, Storage, StreamValues

if TYPE_CHECKING:
    from homing_collector.storage.sqlite import SQLiteStorage

logger = logging.getLogger("homing_collector")

FIELD = "DestinationStreamArn"
BATCH_EVENTS = 2000  # records per batch at most
MAX_PENDING_BATCHES = 32  # batches waiting for a receiver before a stream stops taking more
IDLE_INTERVAL = 0.2  # seconds between passes when there was nothing new


def check_destination(value: str, allowed_dirs: Sequence[Path], *, allow_http: bool = False) -> str:
    """An event stream's destination: an https:// URL (http:// to a loopback address, or
    to any host if `allow_http`), or a file:// URL of a directory the operator allowed
    (serve --stream-dir). HookConfigError names the field and the rule."""
    if value.startswith("file:"):
        parts = urlsplit(value)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise HookConfigError(FIELD, "a file:// URL must name an absolute local directory")
        directory = Path(os.path.normpath(path))
        if not any(directory == d or d in directory.parents for d in allowed_dirs):
            raise HookConfigError(
                FIELD,
                "a file:// directory must be one the operator allowed, or inside one (serve"
                " --stream-dir or HOMING_STREAM_DIR)"
                + ("; none is allowed on this collector" if not allowed_dirs else ""),
            )
        return f"file://{directory}"
    if value.startswith("arn:"):
        raise HookConfigError(
            FIELD,
            "Homing cannot write to Amazon Kinesis; give an https:// URL that receives the"
            " records (http:// only to a loopback address) or an allowed file:// directory",
        )
    try:
        return check_web_url(value, FIELD, allow_http=allow_http)
    except HookConfigError as exc:
        raise HookConfigError(
            FIELD, f"{exc.rule}, or a file:// directory the operator allowed"
        ) from None


def make_batch(
    app_id: str,
) -> Callable[[Sequence[StreamValues], dict[str, bytes]], bytes | None]:
    """What the storage's thread runs on the rows it read: the gzip NDJSON body."""

    def build(rows: Sequence[StreamValues], endpoints: dict[str, bytes]) -> bytes | None:
        if not rows:
            return None
        parsed = {key: orjson.loads(body) for key, body in endpoints.items()}
        lines = Records(app_id).stored_ndjson(rows, parsed, _skipped)
        return ndjson_gzip_lines(lines).content if lines else None

    return build


def _skipped(event_id: str) -> None:
    # A row stored by an older version, say: skipped, not stuck.
    logger.exception("event stream: event %s cannot be made a record", event_id)


class Taker(NamedTuple):
    """A delivery worker that makes a stream's batches as the pump queues them, leased to
    it in the transaction that queues them (SQLite, in the event-stream process): each
    batch then takes no claim, a write transaction that also read its body back from the
    outbox (bench/stream_catchup.py, five runs each, alternated with issue 15's branch
    point: the process's writer thread took 0.6 to 0.84 us of CPU a record, where it
    took 0.8 to 1.6, and its event loop 0.4 to 0.52, where it took 0.6 to 0.64). A batch
    queued behind another of its stream, or for a disabled destination, waits for a
    claim as before."""

    storage: SQLiteStorage
    outbox: Outbox


class StreamPump:
    """Take each application's new events into its event stream, until closed; with a
    `taker`, its worker makes the batches that are due at once."""

    def __init__(
        self,
        storage: Storage,
        *,
        wake: Callable[[], None],
        clock: Clock,
        idle_interval: float = IDLE_INTERVAL,
        batch_events: int = BATCH_EVENTS,
        taker: Taker | None = None,
    ) -> None:
        self.storage = storage
        self.taker = taker
        self.wake = wake  # tells the delivery worker that a batch was queued
        self.clock = clock
        self.idle_interval = idle_interval
        self.batch_events = batch_events
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                moved = await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("event stream: a pass failed; trying again")
                moved = False
            if not moved:
                await asyncio.sleep(self.idle_interval)

    async def pass_once(self) -> bool:
        """One batch for each stream that has new events; True if any cursor moved."""
        moved = False
        for stream in await self.storage.list_event_streams():
            app_id, destination = stream.app_id, stream.destination
            if await self.storage.destination_disabled(app_id, destination):
                continue
            if await self.storage.pending_deliveries(app_id, destination) >= MAX_PENDING_BATCHES:
                continue  # the receiver is behind: the events wait where they are
            body, to = await self.storage.read_event_stream(
                app_id, stream.cursor, self.batch_events, make_batch(app_id)
            )
            if to == stream.cursor:
                continue
            deliveries = []
            if body is not None:
                deliveries.append(
                    NewDelivery(
                        new_message_id(),
                        app_id,
                        destination,
                        body,
                        "application/x-ndjson",
                        "gzip",
                        ordered=True,
                    )
                )
            if deliveries and self._can_take(destination):
                assert self.taker is not None
                now = self.clock()
                advanced = await self.taker.storage.advance_event_stream_leased(
                    app_id, stream.cursor, to, deliveries[0], now, self.taker.outbox.owner,
                    now + self.taker.outbox.lease,
                )  # fmt: skip
                if isinstance(advanced, Delivery):
                    self.taker.outbox.take(advanced)
                    moved = True
                    continue
            else:
                advanced = await self.storage.advance_event_stream(
                    app_id, stream.cursor, to, deliveries, self.clock()
                )
            if advanced:
                moved = True
                if deliveries:
                    self.wake()
        return moved

    def _can_take(self, destination: str) -> bool:
        return self.taker is not None and self.taker.outbox.has_room(destination)
