"""The outbox's calls: POST on HTTP/1.1 connections kept open, the answer parsed in C.

Every delivery that the event-stream process makes (the stream's batches, the custom
channels' calls) is one POST and one short answer. Through httpx (hooks/delivery.py),
each cost about 0.7 ms of CPU, on a machine where that process competes with the
collector's for two cores: its layers (httpx, httpcore, anyio) check the connection,
build and copy the request and read the answer in Python a step at a time. Here a
request is one write of bytes made at once, and the answer is parsed by httptools
(llhttp, which uvicorn already uses to read requests), on an asyncio protocol: about
a tenth of the CPU a call (bench/webhook_calls.py: 60 us against 680).

What it keeps of httpx's behaviour: the same TLS (httpx.create_ssl_context: certifi's
authorities, no environment), no proxy, no redirect followed, Basic credentials from
the URL's user info, `timeout` bounding the whole exchange, and idle connections
dropped after KEEPALIVE_EXPIRY, before servers drop theirs. What it adds: a request
that a kept connection fails before any answer came (the server had closed it
meanwhile) is sent again once on a new connection; the receivers dedupe by
`webhook-id`, and the delivery is at least once anyway. It sends no Accept-Encoding,
so answers come as they are.

The attempt's outcome is classified as hooks/delivery.py's `attempt` does it.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ssl
import time
from collections import deque
from typing import NamedTuple, cast
from urllib.parse import quote, unquote, urlsplit

import httptools
import httpx

from homing_collector.hooks.delivery import (
    _ERROR_TEXT,
    DEFAULT_TIMEOUT,
    MAX_ANSWER_BYTES,
    Attempt,
    Body,
    Outcome,
    classify,
    signed_headers,
)
from homing_collector.hooks.retry import parse_retry_after
from homing_collector.hooks.signing import SigningKeys

KEEPALIVE_EXPIRY = 2.0  # seconds a connection may stay idle before it is dropped
MAX_IDLE = 32  # idle connections kept, over all origins
MAX_HEADER_BYTES = 64 * 1024  # the most an answer's status line and headers may take


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


class Target(NamedTuple):
    origin: Origin
    head: bytes  # the request line and the headers that depend on the URL alone


class ProtocolError(Exception):
    """The answer broke HTTP/1.1, or the connection closed before it ended."""


@functools.lru_cache(maxsize=256)
def target(url: str) -> Target:
    """The origin of `url` and the start of a POST to it; ValueError if it cannot be one."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"the URL's scheme must be http or https, not {parts.scheme!r}")
    host = parts.hostname
    if not host:
        raise ValueError("the URL has no host")
    port = parts.port or (443 if scheme == "https" else 80)  # ValueError if out of range
    # As httpx sends it: what may not stand in a request line is percent-encoded.
    path = quote(parts.path or "/", safe=_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_SAFE)
    if not host.isascii():
        host = host.encode("idna").decode("ascii")  # UnicodeError is a ValueError
    name = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != (443 if scheme == "https" else 80):
        name += f":{parts.port}"
    lines = [f"POST {path} HTTP/1.1", f"host: {name}"]
    if parts.username is not None or parts.password is not None:
        credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        lines.append("authorization: Basic " + base64.b64encode(credentials.encode()).decode())
    text = "\r\n".join(lines) + "\r\n"
    return Target(Origin(scheme, host, port), text.encode("ascii"))


_SAFE = "!#$%&'()*+,/:;=?@[]~"


@functools.lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    return httpx.create_ssl_context(trust_env=False)


class _Connection(asyncio.Protocol):
    """One connection, and the answer to the request it carries (one at a time)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[None] | None = None
        self._got = False  # some of the answer came
        self._header_bytes = 0
        self._limit = 0
        self._error_limit = 0
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.complete = False
        self._delimited = True  # the body's end is marked (length or chunks), not the EOF

    # -- asyncio ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream's transport (uvloop's is not a subclass of asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # nothing was asked: a server talking out of turn
            return
        self._got = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Enough):  # raised by a callback: it said why
                self.close()
            else:
                self._fail(ProtocolError(f"the answer is not HTTP/1.1: {exc}"))

    def eof_received(self) -> bool | None:
        self.closed = True
        if not self.complete and self.status >= 200 and not self._delimited:
            self.complete = True  # the body ran to the end of the connection
            self._end()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            if self._got:
                self._fail(ProtocolError("the connection closed before the answer ended"))
            else:
                self._fail(ConnectionResetError("the connection closed before any answer"))

    # -- httptools -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._fail(ProtocolError(f"the answer's headers are over {MAX_HEADER_BYTES} bytes"))
            raise _Enough
        # httptools gathers each header's pieces, and calls this once per header.
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if not 200 <= self.status < 300:
            self._limit = min(self._limit, self._error_limit)
        self._delimited = (
            "content-length" in self.headers
            or "transfer-encoding" in self.headers
            or self.status in (204, 304)
            or self.status < 200
        )

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > self._limit:  # enough is kept: the rest is not read
            self.closed = True
            self._end()
            raise _Enough

    def on_message_complete(self) -> None:
        if self.status < 200:  # an interim answer (100 Continue): the real one follows
            self.headers, self.body, self._header_bytes = {}, bytearray(), 0
            return
        self.complete = True
        if not self._parser.should_keep_alive():
            self.closed = True
        self._end()

    # -- requests --------------------------------------------------------------------

    async def exchange(self, request: list[bytes], limit: int, error_limit: int) -> None:
        """Send `request`; once it returns, the status, headers and body are read, or an
        exception says why not. The body is read up to `limit` bytes (`error_limit` for
        an answer other than 2xx), and a little more if there was more."""
        assert self.transport is not None
        self.status, self.headers, self.body, self.complete = 0, {}, bytearray(), False
        self._got, self._header_bytes, self._delimited = False, 0, True
        self._limit, self._error_limit = limit, error_limit
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.writelines(request)
        await self._answer

    @property
    def sent_nothing_back(self) -> bool:
        return not self._got

    def _end(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(None)

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Enough(Exception):
    """Stops the parser: the answer was read as far as it is kept."""


class Client:
    """The connections of one process's outbox, kept open between calls."""

    def __init__(self, *, keepalive_expiry: float = KEEPALIVE_EXPIRY) -> None:
        self.keepalive_expiry = keepalive_expiry
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._idle_count = 0

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._idle_count = 0

    async def post(
        self, url: str, headers: dict[str, str], content: bytes, limit: int, error_limit: int
    ) -> tuple[int, dict[str, str], bytes]:
        """POST `content` to `url`: the answer's status, headers (names in lower case) and
        body, of `limit` bytes at most (`error_limit` unless 2xx), or a little more if it
        was longer. OSError, ProtocolError or ValueError (a URL or header that cannot be
        sent) otherwise."""
        where = target(url)
        lines = [where.head]
        for name, value in headers.items():
            line = f"{name}: {value}\r\n"
            if "\n" in value or "\r" in value or "\0" in value:
                raise ValueError(f"the header {name} holds a line break")
            lines.append(line.encode("latin-1"))
        lines.append(b"content-length: %d\r\n\r\n" % len(content))
        request = [b"".join(lines), content]
        connection = self._take(where.origin)
        if connection is not None:
            try:
                return await self._exchange(where.origin, connection, request, limit, error_limit)
            except (ConnectionError, ProtocolError):
                if not connection.sent_nothing_back:
                    raise
                # The server had closed the kept connection: a new one, once.
        connection = await self._connect(where.origin)
        return await self._exchange(where.origin, connection, request, limit, error_limit)

    async def _exchange(
        self,
        origin: Origin,
        connection: _Connection,
        request: list[bytes],
        limit: int,
        error_limit: int,
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            await connection.exchange(request, limit, error_limit)
        except BaseException:
            connection.close()
            raise
        answer = connection.status, connection.headers, bytes(connection.body)
        if connection.closed or not connection.complete:
            connection.close()
        else:
            self._keep(origin, connection)
        return answer

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = _tls() if origin.scheme == "https" else None
        _transport, connection = await loop.create_connection(
            _Connection, origin.host, origin.port, ssl=tls,
            server_hostname=origin.host if tls is not None else None,
        )  # fmt: skip
        return connection

    def _take(self, origin: Origin) -> _Connection | None:
        connections = self._idle.get(origin)
        now = time.monotonic()
        while connections:
            connection = connections.pop()  # the most recently used: the likeliest open
            self._idle_count -= 1
            transport = connection.transport
            if (
                connection.closed
                or transport is None
                or transport.is_closing()
                or now - connection.idle_since > self.keepalive_expiry
            ):
                connection.close()
                continue
            return connection
        return None

    def _keep(self, origin: Origin, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        if self._idle_count >= MAX_IDLE:
            self._drop_oldest()
        self._idle.setdefault(origin, deque()).append(connection)
        self._idle_count += 1

    def _drop_oldest(self) -> None:
        oldest: deque[_Connection] | None = None
        for connections in self._idle.values():
            if connections and (oldest is None or connections[0].idle_since < oldest[0].idle_since):
                oldest = connections
        if oldest is not None:
            oldest.popleft().close()
            self._idle_count -= 1


async def attempt(
    client: Client,
    url: str,
    msg_id: str,
    body: Body,
    keys: SigningKeys,
    *,
    now: float,
    timeout: float = DEFAULT_TIMEOUT,
) -> Attempt:
    """hooks/delivery.py's `attempt`, on `client`: POST `body` to `url`, signed for this
    attempt at `now`; `timeout` bounds the whole exchange. It never raises for what the
    receiver or the network does."""
    headers = signed_headers(msg_id, body, keys, now)
    try:
        # An error's text is kept short; a delivered answer is not kept at all, but the
        # filter hooks' limit (MAX_ANSWER_BYTES) still fails one that is too long.
        status, answer_headers, answer = await asyncio.wait_for(
            client.post(url, headers, body.content, MAX_ANSWER_BYTES, _ERROR_TEXT), timeout
        )
    except asyncio.TimeoutError:
        return Attempt(Outcome.RETRY, error=f"timed out after {timeout:g} s (TimeoutError)")
    except (OSError, ProtocolError) as exc:
        return Attempt(Outcome.RETRY, error=f"{type(exc).__name__}: {exc}")
    except ValueError as exc:
        return Attempt(Outcome.FAILED, error=f"{type(exc).__name__}: {exc}")
    result = classify(status, parse_retry_after(answer_headers.get("retry-after"), now))
    if result.outcome is Outcome.DELIVERED:
        if len(answer) > MAX_ANSWER_BYTES:
            return Attempt(
                Outcome.FAILED,
                status,
                error=f"the answer is over {MAX_ANSWER_BYTES} bytes, the limit",
            )
        return Attempt(Outcome.DELIVERED, status, answer=answer)
    if not result.error:
        text = answer[:_ERROR_TEXT].decode("utf-8", "replace")
        result = Attempt(result.outcome, status, result.retry_after, f"{status}: {text}")
    return result
