"""Reading request bodies within Pinpoint's size limit, gzip included.

A gzip body is inflated while it streams in, a bounded piece at a time, so a gzip bomb
is stopped as soon as it passes the limit, before the rest of it is even read.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import orjson
from starlette.requests import Request

from homing.wire import whole_number
from homing_collector.errors import PinpointError, bad_request

_PIECE = 64 * 1024


def _too_large(limit: int, what: str) -> PinpointError:
    return PinpointError(413, f"{what} is larger than {limit} bytes, the request size limit")


class _Inflater:
    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding
        self.limit = limit
        self.size = 0
        self.out: list[bytes] = []
        self._zlib: Any = None

    def feed(self, data: bytes) -> None:
        if self._zlib is None:
            # 47 takes a gzip or a zlib header; -15 is the raw deflate some clients send.
            raw_deflate = self.encoding == "deflate" and data[:1] != b"\x78"
            self._zlib = zlib.decompressobj(-15 if raw_deflate else 47)
        try:
            while data and not self._zlib.eof:
                piece = self._zlib.decompress(data, _PIECE)
                self.size += len(piece)
                if self.size > self.limit:
                    raise _too_large(self.limit, "The inflated request body")
                self.out.append(piece)
                data = self._zlib.unconsumed_tail
        except zlib.error as exc:
            raise bad_request(f"The body is not valid {self.encoding}: {exc}") from None

    def finish(self) -> bytes:
        if self._zlib is not None and not self._zlib.eof:
            raise bad_request(f"The {self.encoding} body is truncated")
        return b"".join(self.out)


async def read_body(request: Request, limit: int) -> tuple[bytes, bytes]:
    """Return the body as sent (what SigV4 signed) and as decoded, each within `limit`."""
    length = whole_number(request.headers.get("content-length"), max_digits=30)
    if length is not None and length > limit:
        error = _too_large(limit, "The request body")
        error.body_unread = True
        raise error
    encoding = request.headers.get("content-encoding", "").strip().lower()
    inflater: _Inflater | None = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflater = _Inflater(encoding, limit)
    elif encoding not in ("", "identity"):
        raise bad_request(f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, "The request body")
        chunks.append(chunk)
        if inflater is not None and chunk:
            inflater.feed(chunk)
    raw = b"".join(chunks)
    return raw, (inflater.finish() if inflater is not None else raw)


def parse_json(data: bytes) -> Any:
    if not data.strip():
        raise bad_request("The request body is empty; a JSON object is required")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "infinity" not in str(exc):
            raise bad_request(f"The request body is not valid JSON: {exc}") from None
        error = exc
    # 1e999 is valid JSON that orjson will not read. The slower parser reads it as inf, so
    # the validator can reject the one event that carries it instead of the whole batch.
    # It also reads what orjson cannot write back (huge integers, lone surrogates): those
    # bodies are refused here, so nothing downstream meets them.
    try:
        value = json.loads(data, parse_int=_int64_or_float)
        orjson.dumps(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise bad_request(f"The request body is not valid JSON: {error}") from None
    return value


def _int64_or_float(text: str) -> int | float:
    number = int(text)
    return number if -(2**63) <= number < 2**64 else float(number)
