"""The delivery worker: it takes due deliveries from the durable outbox and makes them.

Each process of the collector runs one. A worker leases the deliveries it takes (see
storage/outbox.py), so with `serve --workers N` a delivery is made by one process at a
time, and one whose process died is taken again once its lease runs out. Each attempt
goes through hooks/http11.py (on connections kept open, classified as hooks/delivery.py
says), signed with the application's secrets (both while a rotation lasts); a failure
is retried on hooks/retry.py's schedule, honouring `Retry-After`, and dead-lettered once
the retry budget is spent; a 410 disables the destination for that application. Each
destination has its own bound of requests in flight, so a slow receiver holds only its
own.

Two destinations are not URLs called over HTTP: `file:` appends to the file sink, and
`hook:NAME` hands the (decoded) payload to the in-process custom delivery hook of that
name; either is retried and dead-lettered like a webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Protocol
from urllib.parse import urlsplit

import orjson

from homing_collector.hooks import filesink, http11
from homing_collector.hooks.delivery import DEFAULT_TIMEOUT, Attempt, Body, Outcome
from homing_collector.hooks.errors import HookResponseError
from homing_collector.hooks.registry import hook_name
from homing_collector.hooks.retry import RetryPolicy
from homing_collector.hooks.runner import HookRunner
from homing_collector.hooks.signing import SigningKeys, new_secret
from homing_collector.lifetime import alive, holder_name, wait_set
from homing_collector.metrics import Metrics
from homing_collector.storage.base import Delivery, Storage

logger = logging.getLogger("homing_collector")

Clock = Callable[[], float]

# Seconds between looks for due deliveries when nobody says there are (the event-stream
# process cannot): a look is a read, and only one that finds some takes a write.
POLL_INTERVAL = 0.1
GAUGE_INTERVAL = 1.0  # seconds between readings of the lag and dead-letter gauges
PURGE_INTERVAL = 60.0
KEEP_DELIVERED = 3600.0  # seconds a delivered row is kept (without its body), for counts
SECRETS_TTL = 1.0  # seconds a process trusts the secrets it read (another may rotate them)
CLOSE_GRACE = 2.0  # seconds that calls in flight get to finish when the collector stops


class Deliveries(Protocol):
    """Where a worker finds the deliveries it makes: the storage's outbox, or the part of
    it that a process takes (see hooks/stream_process.py)."""

    async def deliveries_due(self, now: float) -> bool: ...

    async def claim_deliveries(
        self,
        owner: str,
        now: float,
        lease_until: float,
        *,
        limit: int,
        per_destination: int,
        busy: Sequence[str],
        held: Sequence[int] = (),
    ) -> list[Delivery]: ...


def destination_label(destination: str) -> str:
    """A destination as /metrics names it: no credentials and no query, which may hold
    tokens."""
    if hook_name(destination) is not None:
        return destination
    parts = urlsplit(destination)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Outbox:
    """Make the outbox's deliveries, in the background, until closed.

    `clock` (Unix seconds) times attempts, retries, the retry budget and leases; tests
    give one that runs faster than time. `hooks` makes the deliveries to `hook:NAME`
    destinations (without it, they are retried until they are dead letters). `source`
    says which deliveries this worker takes (all of the storage's by default), and
    `chores=False` leaves the gauges and the purge to another worker of the process.
    """

    def __init__(
        self,
        storage: Storage,
        metrics: Metrics,
        *,
        policy: RetryPolicy | None = None,
        clock: Clock = time.time,
        poll_interval: float = POLL_INTERVAL,
        concurrency: int = 4,
        max_in_flight: int = 64,
        timeout: float = DEFAULT_TIMEOUT,
        lease: float = 4 * DEFAULT_TIMEOUT,
        rng: random.Random | None = None,
        hooks: HookRunner | None = None,
        source: Deliveries | None = None,
        chores: bool = True,
    ) -> None:
        self.storage = storage
        self.source: Deliveries = source or storage
        self.chores = chores
        self.hooks = hooks
        self.metrics = metrics
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.lease = lease
        # This process, as the leases it takes name it: its host and pid let a process
        # started after a crash take over the leases of the one that died at once,
        # rather than when they run out.
        self.owner = holder_name()
        self._rng = rng
        self._client: http11.Client | None = None
        self._wake = asyncio.Event()
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._in_flight: Counter[str] = Counter()
        self._held: set[int] = set()  # the deliveries in flight here
        self._calls: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._keys: dict[str, tuple[float, SigningKeys]] = {}

    async def start(self) -> None:
        # Calls go through hooks/http11.py: a connection per call in flight (bounded by
        # `concurrency` per destination and `max_in_flight` in all), kept open between
        # calls, and dropped once idle well before servers drop theirs (uvicorn after
        # 5 s): a request on a connection the server is closing fails with no answer.
        self._client = http11.Client()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await self.release_dead_leases()
        self._tasks = [loop.create_task(self._run())]
        if self.chores:
            self._tasks += [
                loop.create_task(self._every(GAUGE_INTERVAL, self.read_gauges)),
                loop.create_task(self._every(PURGE_INTERVAL, self._purge)),
            ]

    @property
    def in_flight(self) -> int:
        """Deliveries being made now, by this process."""
        return len(self._held)

    def wake(self) -> None:
        """Look for due deliveries now: some were just queued."""
        self._wake.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._calls:
            # What does not finish in time is made again after its lease: at least once.
            _done, late = await asyncio.wait(self._calls, timeout=CLOSE_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                claimed = await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hooks: could not read the outbox; trying again")
                claimed = 0
            if claimed:
                continue  # there may be more
            await wait_set(self._wake, self.poll_interval)

    async def _claim(self) -> int:
        free = self.max_in_flight - sum(self._in_flight.values())
        if free <= 0:
            return 0
        now = self.clock()
        if not await self.source.deliveries_due(now):
            return 0
        busy = [d for d, n in self._in_flight.items() if n >= self.concurrency]
        claimed = await self.source.claim_deliveries(
            self.owner,
            now,
            now + self.lease,
            limit=free,
            per_destination=self.concurrency,
            busy=busy,
            held=list(self._held),
        )
        for delivery in claimed:
            self.take(delivery)
        return len(claimed)

    def has_room(self, destination: str) -> bool:
        """Whether a claim now could take one more delivery to `destination`."""
        return (
            sum(self._in_flight.values()) < self.max_in_flight
            and self._in_flight[destination] < self.concurrency
        )

    def take(self, delivery: Delivery) -> None:
        """Make a delivery leased to this worker (by its claim, or by the transaction that
        queued it: see hooks/streams.py)."""
        self._held.add(delivery.seq)
        self._in_flight[delivery.destination] += 1
        task = asyncio.get_running_loop().create_task(self._deliver(delivery))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _deliver(self, delivery: Delivery) -> None:
        destination = delivery.destination
        slots = self._slots.setdefault(destination, asyncio.Semaphore(self.concurrency))
        try:
            async with slots:
                result = await self._attempt(delivery)
            await self._settle(delivery, result)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("hooks: delivery %s failed unexpectedly", delivery.id)
            with contextlib.suppress(Exception):  # else its lease runs out, and it is taken
                await self.storage.settle_delivery(
                    delivery, self.owner, "retry", now=self.clock(),
                    next_attempt_at=self.clock() + self.policy.first_delay,
                    error="the collector failed to make this attempt",
                )  # fmt: skip
        finally:
            self._held.discard(delivery.seq)
            self._in_flight[destination] -= 1
            if self._in_flight[destination] <= 0:
                del self._in_flight[destination]
            self.wake()  # a slot is free, and the next of an ordered queue is due

    async def _attempt(self, delivery: Delivery) -> Attempt:
        body = Body(delivery.body, delivery.content_type, delivery.content_encoding)
        if delivery.destination.startswith("file:"):
            try:
                await asyncio.to_thread(filesink.write, delivery.destination, delivery.app_id, body)
            except (OSError, ValueError) as exc:
                return Attempt(Outcome.RETRY, error=f"cannot write the file: {exc}")
            return Attempt(Outcome.DELIVERED)
        name = hook_name(delivery.destination)
        if name is not None:
            return await self._hand_to_hook(name, body)
        assert self._client is not None
        keys = await self.keys(delivery.app_id)
        return await http11.attempt(
            self._client,
            delivery.destination,
            delivery.id,
            body,
            keys,
            now=self.clock(),
            timeout=self.timeout,
        )

    async def _hand_to_hook(self, name: str, body: Body) -> Attempt:
        """Give a payload to the in-process custom delivery hook `name`; it was delivered
        if the hook returned."""
        try:  # a custom channel payload, JSON (hooks/campaign.py): never gzip
            payload = orjson.loads(body.content)
        except orjson.JSONDecodeError as exc:
            return Attempt(Outcome.FAILED, error=f"the payload cannot be decoded: {exc}")
        if self.hooks is None:
            return Attempt(Outcome.RETRY, error="this process calls no in-process hooks")
        try:
            await self.hooks.custom_delivery(name, payload)
        except HookResponseError as exc:  # what the runner makes of any failure
            return Attempt(Outcome.RETRY, error=str(exc))
        return Attempt(Outcome.DELIVERED)

    async def _settle(self, delivery: Delivery, result: Attempt) -> None:
        label = destination_label(delivery.destination)
        self.metrics.hook_attempts[(label, result.outcome.value)] += 1
        now = self.clock()
        error = result.error or (str(result.status) if result.status else "")
        if result.outcome is Outcome.DELIVERED:
            state, at = "delivered", 0.0
        elif result.outcome is Outcome.GONE:
            state, at = "disable", 0.0
            logger.warning(
                "hooks: %s answered 410 Gone; it is disabled for application %s",
                label,
                delivery.app_id,
            )
        elif result.outcome is Outcome.FAILED:
            state, at = "dead", 0.0
        else:
            first = delivery.first_attempt_at if delivery.first_attempt_at is not None else now
            next_at = self.policy.next_attempt(
                retry=delivery.attempts + 1,
                first_attempt_at=first,
                now=now,
                retry_after=result.retry_after,
                rng=self._rng,
            )
            state, at = ("dead", 0.0) if next_at is None else ("retry", next_at)
            if next_at is None:
                error = f"{error}; the retry budget of {self.policy.budget:g} s is spent"
        if state != "delivered":
            logger.info(
                "hooks: delivery %s to %s: %s (%s)", delivery.id, label, state, error or "no answer"
            )
        settled = await self.storage.settle_delivery(
            delivery, self.owner, state, now=now, next_attempt_at=at, error=error
        )
        if not settled:
            logger.warning("hooks: delivery %s was taken over after its lease ran out", delivery.id)

    async def keys(self, app_id: str) -> SigningKeys:
        """The application's signing keys; its first secret is made on first use."""
        cached = self._keys.get(app_id)
        if cached is not None and time.monotonic() - cached[0] < SECRETS_TTL:
            return cached[1]
        found = await self.storage.hook_secrets(app_id, create=new_secret(), now=now_text())
        assert found is not None
        keys = SigningKeys(found.current, found.previous)
        self._keys[app_id] = (time.monotonic(), keys)
        return keys

    def forget_keys(self, app_id: str) -> None:
        self._keys.pop(app_id, None)

    # -- chores --------------------------------------------------------------------------

    async def read_gauges(self) -> None:
        gauges = await self.storage.hook_gauges()
        now = self.clock()
        pending: dict[str, list[float]] = {}
        for destination, count, oldest in gauges["pending"]:
            row = pending.setdefault(destination_label(destination), [0, 0.0])
            row[0] += count
            row[1] = max(row[1], now - oldest)
        dead: Counter[str] = Counter()
        for destination, count in gauges["dead"]:
            dead[destination_label(destination)] += count
        streams = {
            app_id: [events, 0.0 if oldest is None else max(0.0, now - oldest / 1000)]
            for app_id, _destination, events, oldest in gauges["streams"]
        }
        self.metrics.hook_gauges = {
            "pending": pending,
            "dead": dict(dead),
            "streams": streams,
        }

    async def _purge(self) -> None:
        await self.storage.purge_deliveries(self.clock() - KEEP_DELIVERED)
        await self.release_dead_leases()

    async def release_dead_leases(self) -> int:
        """End the leases held by processes of this host that are gone (killed, say)."""
        host = socket.gethostname()
        gone = []
        for owner in await self.storage.lease_owners(self.clock()):
            parts = owner.split(":")
            if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
                continue
            if int(parts[1]) != os.getpid() and not alive(int(parts[1])):
                gone.append(owner)
        if not gone:
            return 0
        released = await self.storage.release_leases(gone)
        logger.info("hooks: took back %d deliveries leased by processes that are gone", released)
        return released

    async def _every(self, seconds: float, chore: Callable[[], object]) -> None:
        while True:
            try:
                result = chore()
                if asyncio.iscoroutine(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hooks: a background chore failed; it runs again later")
            await asyncio.sleep(seconds)
