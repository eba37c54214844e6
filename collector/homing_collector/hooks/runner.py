"""Calling in-process hooks safely.

A hook is someone else's code running inside the collector. Whatever it does, raise,
hang, or answer the wrong type, is logged, counted in /metrics
(`homing_hook_errors_total{hook, name}`, beside `homing_hook_calls_total`), and turned
into the answer the caller expects: a failed filter fails its batch with the
HookResponseError the webhook path raises (hooks/filtering.py), a failed custom
delivery raises it too, for the outbox to try again, and a failed event-stream call
returns False so that its batch comes again. Campaigns call filters and custom
deliveries by name (`hook:NAME`); a name no hook has fails like a hook that raised.
Sync hooks run in threads of the runner's own, so that a slow one never blocks the event
loop that answers PutEvents; async hooks run on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from homing_collector.hooks.errors import HookResponseError
from homing_collector.hooks.payloads import FILTER_TIMEOUT, Endpoint, check_filter_answer
from homing_collector.hooks.registry import NamedHook, Registry
from homing_collector.metrics import Metrics

logger = logging.getLogger("homing_collector")

# The webhooks' timeouts: Pinpoint gives a filter 15 s, and a delivery attempt has as long.
CALL_TIMEOUT = FILTER_TIMEOUT
MAX_THREADS = 4  # sync hooks running at once; more wait for a thread


class HookRunner:
    """Calls the hooks of a Registry and counts what happens in `metrics`."""

    def __init__(
        self,
        registry: Registry,
        metrics: Metrics,
        *,
        timeout: float = CALL_TIMEOUT,
        max_threads: int = MAX_THREADS,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.timeout = timeout
        self.max_threads = max_threads
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None

    def count_load_errors(self) -> None:
        """Count the entry points the registry could not load."""
        for name in self.registry.load_errors:
            self.metrics.hook_errors[("load", name)] += 1

    async def filter(self, name: str, request: Mapping[str, Any]) -> dict[str, Endpoint]:
        """The endpoints that the filter hook `name` keeps of `request` (a FILTER hook
        request, payloads.filter_request). HookResponseError if it fails or no filter
        hook has that name: the batch fails, as it does when a webhook filter fails."""
        hook = self._named("filter", name)
        sent = _copy(request)
        try:
            answer = await self._call(hook, sent, self.timeout)
            return check_filter_answer(answer, request["Endpoints"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise HookResponseError(self._failed(hook, exc)) from None

    async def custom_delivery(self, name: str, payload: Mapping[str, Any]) -> None:
        """Give a custom channel payload (payloads.custom_delivery_payload) to the custom
        delivery hook `name`. HookResponseError if it fails or no custom delivery hook has
        that name: the outbox tries again later."""
        hook = self._named("custom_delivery", name)
        try:
            await self._call(hook, _copy(payload), self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise HookResponseError(self._failed(hook, exc)) from None

    async def event_stream(self, hook: NamedHook, records: Sequence[dict[str, Any]]) -> bool:
        """Give records to one event-stream hook; False if it failed (then logged and
        counted). No timeout: a batch must not be given again while the hook may still
        be taking it, or the records would go out of order."""
        try:
            await self._call(hook, list(records), None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(hook, exc)
            return False
        return True

    async def close(self) -> None:
        threads, self._threads = self._threads, None
        if threads is not None:
            # A hung hook's thread is not waited for: it must not hold up the shutdown.
            threads.shutdown(wait=False, cancel_futures=True)

    def _named(self, kind: str, name: str) -> NamedHook:
        hook = self.registry.named(kind, name)
        if hook is None:  # its plugin was uninstalled since the campaign named it, say
            raise HookResponseError(self.registry.missing(kind, name))
        return hook

    async def _call(self, hook: NamedHook, argument: Any, timeout: float | None) -> Any:
        self.metrics.hook_calls[(hook.kind, hook.name)] += 1
        return await asyncio.wait_for(self._run(hook, argument), timeout)

    async def _run(self, hook: NamedHook, argument: Any) -> Any:
        function = hook.function
        if _is_async(function):
            result = function(argument)
        else:
            if self._threads is None:
                self._threads = concurrent.futures.ThreadPoolExecutor(
                    self.max_threads, thread_name_prefix="homing-hook"
                )
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._threads, function, argument)
        if inspect.isawaitable(result):  # a sync function that returned a coroutine
            result = await result
        return result

    def _failed(self, hook: NamedHook, exc: Exception) -> str:
        """Log and count a failed call; the message for the caller."""
        self.metrics.hook_errors[(hook.kind, hook.name)] += 1
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            message = f"the {hook.kind} hook {hook.name!r} did not return within {self.timeout:g} s"
            logger.error("hooks: %s", message)
        elif isinstance(exc, HookResponseError):
            message = f"the {hook.kind} hook {hook.name!r} answered badly: {exc}"
            logger.error("hooks: %s", message)
        else:
            message = f"the {hook.kind} hook {hook.name!r} raised {type(exc).__name__}: {exc}"
            logger.error("hooks: %s", message, exc_info=exc)
        return message


def _is_async(function: Any) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - an object with async __call__
    )


def _copy(value: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy, so that what one hook changes neither the caller nor another hook
    sees; payloads are JSON, and orjson copies them faster than copy.deepcopy."""
    copied: dict[str, Any] = orjson.loads(orjson.dumps(value))
    return copied
