"""One attempt at a webhook delivery: POST the signed body, and say what happened.

    delivered   2xx
    retry       408, 429, 5xx, a timeout or a connection error (with Retry-After, if any)
    gone        410: the receiver asks to be left alone; the destination is disabled
    failed      any other status, 3xx included (redirects are not followed): trying
                again would get the same answer

The attempt never raises for what the receiver or the network does.
"""

from __future__ import annotations

import asyncio
import enum
import importlib.util
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
import orjson

from homing_collector.hooks.compression import gzip_fast
from homing_collector.hooks.retry import parse_retry_after
from homing_collector.hooks.signing import SigningKeys

if importlib.util.find_spec("sniffio") is None:
    # httpcore asks `import sniffio` at every lock, event and request of an AsyncClient
    # (encode/httpcore#1103); since anyio 4.11 stopped bringing it, each ask is a failed
    # import that searches sys.path again. None in sys.modules fails it at once, as it
    # fails anyway. bench: 960 us of CPU a webhook call, 690 with this.
    sys.modules["sniffio"] = None  # type: ignore[assignment]

USER_AGENT = "homing-webhooks/1"
# Standard Webhooks asks receivers to answer within 15 to 30 s; Pinpoint gave its filter
# hooks 15 s.
DEFAULT_TIMEOUT = 15.0
_RETRIED_4XX = frozenset({408, 429})
_ERROR_TEXT = 200  # how much of a receiver's error body a report keeps
# The largest answer kept (a filter hook's): Pinpoint's limit for a Lambda payload, 6 MB.
MAX_ANSWER_BYTES = 6 * 1024 * 1024


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GONE = "gone"
    FAILED = "failed"


@dataclass(frozen=True)
class Body:
    """The exact bytes sent, which are the bytes signed, and how to read them."""

    content: bytes
    content_type: str = "application/json"
    content_encoding: str | None = None


def json_body(payload: Any) -> Body:
    return Body(orjson.dumps(payload))


def ndjson_gzip_body(records: Iterable[Any]) -> Body:
    """Records as gzip-compressed NDJSON, one JSON object per line, as the event stream
    sends them; the signature covers the compressed bytes."""
    return ndjson_gzip_lines(b"".join(orjson.dumps(record) + b"\n" for record in records))


def ndjson_gzip_lines(lines: bytes) -> Body:
    """NDJSON lines, each ending with a newline, as ndjson_gzip_body sends them."""
    # The stream's batches are made on the collector's CPU: the fastest level that still
    # compresses well (hooks/compression.py).
    return Body(gzip_fast(lines), "application/x-ndjson", "gzip")


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    status: int | None = None  # None when no answer came
    retry_after: float | None = None  # seconds, from the receiver's Retry-After
    error: str = ""
    answer: bytes = b""  # the body of a 2xx answer


def classify(status: int, retry_after: float | None = None) -> Attempt:
    if 200 <= status < 300:
        return Attempt(Outcome.DELIVERED, status)
    if status == 410:
        return Attempt(Outcome.GONE, status, error="410 Gone: the receiver asked to stop")
    if status >= 500 or status in _RETRIED_4XX:
        return Attempt(Outcome.RETRY, status, retry_after)
    if 300 <= status < 400:
        return Attempt(
            Outcome.FAILED, status, error=f"{status}: redirects are not followed; use the final URL"
        )
    return Attempt(Outcome.FAILED, status)


def signed_headers(msg_id: str, body: Body, keys: SigningKeys, now: float) -> dict[str, str]:
    """The headers of an attempt to deliver `body` at `now` (Unix seconds), signed."""
    headers = keys.headers(msg_id, datetime.fromtimestamp(now, timezone.utc), body.content)
    headers["content-type"] = body.content_type
    headers["user-agent"] = USER_AGENT
    if body.content_encoding is not None:
        headers["content-encoding"] = body.content_encoding
    return headers


async def attempt(
    client: httpx.AsyncClient,
    url: str,
    msg_id: str,
    body: Body,
    keys: SigningKeys,
    *,
    now: float,
    timeout: float = DEFAULT_TIMEOUT,
) -> Attempt:
    """POST `body` to `url`, signed for this attempt at `now` (Unix seconds).

    `timeout` bounds the whole exchange, not each read: a receiver that drips its answer
    a byte at a time is cut off all the same.
    """
    headers = signed_headers(msg_id, body, keys, now)
    try:
        return await asyncio.wait_for(_post(client, url, body, headers, now, timeout), timeout)
    except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
        return Attempt(Outcome.RETRY, error=f"timed out after {timeout:g} s ({type(exc).__name__})")
    except httpx.TransportError as exc:
        return Attempt(Outcome.RETRY, error=f"{type(exc).__name__}: {exc}")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # e.g. an answer that cannot be decoded
        return Attempt(Outcome.FAILED, error=f"{type(exc).__name__}: {exc}")


async def _post(
    client: httpx.AsyncClient,
    url: str,
    body: Body,
    headers: dict[str, str],
    now: float,
    timeout: float,
) -> Attempt:
    request = client.build_request(
        "POST", url, content=body.content, headers=headers, timeout=timeout
    )
    response = await client.send(request, stream=True, follow_redirects=False)
    try:
        result = classify(response.status_code, _retry_after(response.headers, now))
        # Read no more than is kept: an answer is not a way to fill the collector's memory.
        limit = MAX_ANSWER_BYTES if result.outcome is Outcome.DELIVERED else _ERROR_TEXT
        answer = bytearray()
        async for chunk in response.aiter_bytes():
            answer += chunk
            if len(answer) > limit:
                break
    finally:
        await response.aclose()
    if result.outcome is Outcome.DELIVERED:
        if len(answer) > MAX_ANSWER_BYTES:
            return Attempt(
                Outcome.FAILED,
                result.status,
                error=f"the answer is over {MAX_ANSWER_BYTES} bytes, the limit",
            )
        return Attempt(Outcome.DELIVERED, result.status, answer=bytes(answer))
    if not result.error:
        text = answer[:_ERROR_TEXT].decode("utf-8", "replace")
        result = Attempt(
            result.outcome, result.status, result.retry_after, f"{result.status}: {text}"
        )
    return result


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    return parse_retry_after(headers.get("retry-after"), now)
