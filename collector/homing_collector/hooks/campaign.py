"""The two points where a campaign run calls out: its FILTER hook, before delivery, and
its custom channel, which delivers.

`CampaignHooks.filter` asks a FILTER hook about one batch of at most 50 endpoints and
returns those it keeps, as it changed them, signed like every outgoing call, under
Pinpoint's contract (hooks/filtering.py); a `hook:NAME` URL asks the in-process filter
hook of that name instead (hooks/runner.py). `CampaignHooks.deliveries` makes the
outbox rows of one custom-channel delivery; the scheduler stores them in the
transaction that records the sends, so the outbox makes them at least once and never
for a send that was not recorded (to a `hook:NAME` destination too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import orjson

from homing_collector.hooks.delivery import Attempt, Outcome
from homing_collector.hooks.errors import HookResponseError
from homing_collector.hooks.filtering import filter_endpoints
from homing_collector.hooks.outbox import destination_label, now_text
from homing_collector.hooks.payloads import (
    FILTER_TIMEOUT,
    CampaignRun,
    Endpoint,
    batches,
    custom_delivery_payload,
    filter_request,
)
from homing_collector.hooks.registry import hook_name
from homing_collector.hooks.runner import HookRunner
from homing_collector.hooks.signing import SigningKeys, new_message_id, new_secret
from homing_collector.metrics import Metrics
from homing_collector.storage.base import NewDelivery, Storage

Keys = Callable[[str], Awaitable[SigningKeys]]


class CampaignHooks:
    """Call campaigns' FILTER hooks and queue their custom-channel deliveries.

    `keys` gives an application's signing keys (the outbox's, so that every call is
    signed alike); `timeout` is the seconds a FILTER hook has for each attempt. FILTER
    hook attempts are counted in `metrics` with the outbox's, by destination. `runner`
    calls the in-process filter hooks that `hook:NAME` URLs name.
    """

    def __init__(
        self,
        keys: Keys,
        *,
        timeout: float = FILTER_TIMEOUT,
        wake: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        runner: HookRunner | None = None,
    ) -> None:
        self.keys = keys
        self.runner = runner
        self.timeout = timeout
        self.wake = wake  # told when deliveries were queued
        self.clock = clock
        self.metrics = metrics
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def filter(
        self,
        url: str,
        run: CampaignRun,
        message_configuration: Mapping[str, Any],
        endpoints: Mapping[str, Endpoint],
    ) -> dict[str, Endpoint]:
        """The endpoints the FILTER hook at `url` keeps of `endpoints` (at most 50), as it
        changed them; HookResponseError fails the batch."""
        label = destination_label(url)

        def observe(result: Attempt) -> None:
            if self.metrics is not None:
                self.metrics.hook_attempts[(label, result.outcome.value)] += 1

        name = hook_name(url)
        if name is not None:
            if self.runner is None:
                raise HookResponseError("this process calls no in-process hooks")
            request = filter_request(run, message_configuration, endpoints)
            try:
                kept = await self.runner.filter(name, request)
            except HookResponseError:
                observe(Attempt(Outcome.FAILED))
                raise
            observe(Attempt(Outcome.DELIVERED))
            return kept

        client = await self._get_client()
        keys = await self.keys(run.application_id)

        return await filter_endpoints(
            client, url, keys, run, message_configuration, endpoints,
            timeout=self.timeout, clock=self.clock, observe=observe,
        )  # fmt: skip

    def deliveries(
        self, url: str, run: CampaignRun, data: str, endpoints: Mapping[str, Endpoint]
    ) -> list[NewDelivery]:
        """The outbox rows that send `endpoints` to the custom channel at `url`, at most
        50 a call, in Pinpoint's custom-channel payload."""
        return [
            NewDelivery(
                id=new_message_id(),
                app_id=run.application_id,
                destination=url,
                body=orjson.dumps(custom_delivery_payload(run, data, batch)),
                content_type="application/json",
            )
            for batch in batches(endpoints.items())
        ]

    async def _get_client(self) -> httpx.AsyncClient:
        async with self._lock:
            if self._client is None:
                self._client = httpx.AsyncClient(
                    transport=self._transport, timeout=self.timeout, trust_env=False
                )
            return self._client


def stored_keys(storage: Storage) -> Keys:
    """Signing keys read from the storage at each call (the outbox's `keys` caches them)."""

    async def keys(app_id: str) -> SigningKeys:
        found = await storage.hook_secrets(app_id, create=new_secret(), now=now_text())
        assert found is not None
        return SigningKeys(found.current, found.previous)

    return keys
