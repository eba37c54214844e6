"""Deliver messages to many destinations at once, each within its own bound.

Each destination has its own limit of requests in flight, so a slow or failing receiver
only ever holds its own slots: the others keep their pace. A message is tried until it
is delivered, refused for good, or its retry budget is spent (dead-lettered). A 410
disables its destination: messages still waiting for it are not sent.

This is the in-memory engine; the durable outbox keeps the same states in storage.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx

from homing_collector.hooks.delivery import DEFAULT_TIMEOUT, Attempt, Body, Outcome, attempt
from homing_collector.hooks.retry import RetryPolicy
from homing_collector.hooks.signing import SigningKeys

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Destination:
    id: str
    url: str
    keys: SigningKeys
    concurrency: int = 4  # requests in flight to this destination at most
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"Destination.concurrency: must be 1 or more, not {self.concurrency}")


@dataclass(frozen=True)
class Message:
    id: str  # the webhook-id: the same for every attempt
    body: Body


class State(enum.Enum):
    DELIVERED = "delivered"
    GONE = "gone"  # the destination answered 410, now or for an earlier message
    FAILED = "failed"  # refused for good (a 4xx other than 408, 410 and 429)
    DEAD = "dead"  # still failing when the retry budget ran out: dead-lettered


@dataclass
class Report:
    destination_id: str
    message_id: str
    state: State
    attempts: list[Attempt] = field(default_factory=list)
    finished_at: float = 0.0


class Dispatcher:
    """Send messages to destinations; return one Report per message.

    `clock` (Unix seconds) and `sleep` are injectable, so tests can run a 24-hour retry
    budget in no time. The client's connection pool must allow the sum of the
    destinations' bounds, or the pool, shared, becomes the place where they wait.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        policy: RetryPolicy | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._policy = policy or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._slots: dict[str, asyncio.Semaphore] = {}
        self.disabled: set[str] = set()  # destinations that answered 410

    async def deliver_all(self, work: Iterable[tuple[Destination, Message]]) -> list[Report]:
        return list(await asyncio.gather(*(self.deliver(d, m) for d, m in work)))

    async def deliver(self, destination: Destination, message: Message) -> Report:
        report = Report(destination.id, message.id, State.DEAD)
        slots = self._slots.setdefault(destination.id, asyncio.Semaphore(destination.concurrency))
        first = self._clock()
        retry = 0
        while True:
            if destination.id in self.disabled:
                report.state = State.GONE
                break
            # The slot is held for the request only, never while waiting for a retry.
            async with slots:
                result = await attempt(
                    self._client,
                    destination.url,
                    message.id,
                    message.body,
                    destination.keys,
                    now=self._clock(),
                    timeout=destination.timeout,
                )
            report.attempts.append(result)
            if result.outcome is Outcome.DELIVERED:
                report.state = State.DELIVERED
                break
            if result.outcome is Outcome.GONE:
                self.disabled.add(destination.id)
                report.state = State.GONE
                break
            if result.outcome is Outcome.FAILED:
                report.state = State.FAILED
                break
            retry += 1
            now = self._clock()
            at = self._policy.next_attempt(
                retry=retry,
                first_attempt_at=first,
                now=now,
                retry_after=result.retry_after,
                rng=self._rng,
            )
            if at is None:
                report.state = State.DEAD
                break
            await self._sleep(at - now)
        report.finished_at = self._clock()
        return report
