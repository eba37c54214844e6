"""Call a campaign's FILTER hook for one batch, under Pinpoint's contract.

The hook has 15 s to answer and at most 3 attempts; an answer that cannot be decoded,
or no usable answer after 3 attempts, fails that batch (HookResponseError), which the
campaign counts in the activity's ExecutionMetrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import orjson

from homing_collector.hooks.delivery import Attempt, Body, Outcome, attempt
from homing_collector.hooks.dispatch import Clock
from homing_collector.hooks.errors import HookResponseError
from homing_collector.hooks.payloads import (
    FILTER_MAX_ATTEMPTS,
    FILTER_TIMEOUT,
    CampaignRun,
    Endpoint,
    filter_request,
    parse_filter_response,
)
from homing_collector.hooks.signing import SigningKeys, new_message_id


async def filter_endpoints(
    client: httpx.AsyncClient,
    url: str,
    keys: SigningKeys,
    run: CampaignRun,
    message_configuration: Mapping[str, Any],
    endpoints: Mapping[str, Endpoint],
    *,
    timeout: float = FILTER_TIMEOUT,
    clock: Clock = time.time,
    observe: Callable[[Attempt], None] | None = None,
) -> dict[str, Endpoint]:
    """The endpoints the hook keeps, as it changed them. `observe` hears of each attempt;
    a 2xx whose answer cannot be decoded counts as FAILED."""

    def seen(result: Attempt) -> None:
        if observe is not None:
            observe(result)

    body = Body(orjson.dumps(filter_request(run, message_configuration, endpoints)))
    msg_id = new_message_id()
    errors = []
    for _ in range(FILTER_MAX_ATTEMPTS):
        result = await attempt(client, url, msg_id, body, keys, now=clock(), timeout=timeout)
        if result.outcome is Outcome.DELIVERED:
            try:
                kept = parse_filter_response(result.answer, endpoints)
            except HookResponseError as exc:
                seen(Attempt(Outcome.FAILED, result.status, error=str(exc)))
                raise
            seen(result)
            return kept
        seen(result)
        errors.append(result.error or str(result.status))
        if result.outcome is not Outcome.RETRY:
            break
    raise HookResponseError(
        f"the filter hook failed after {len(errors)} attempt(s): {'; '.join(errors)}"
    )
