"""The push receiver: one daemon thread holding the collector's push stream open.

The stream is Server-Sent Events. Each message is parsed, checked against the persisted
set of message ids already handled, dispatched to the app's handlers, remembered, and
then acknowledged; a message sent again (the collector re-sends what was not acked) is
recognised and only acknowledged. The highest sequence number handled goes back as
``Last-Event-ID`` on reconnect. Errors never leave the thread: they are logged and
counted in `PushStats`.
"""

from __future__ import annotations

import codecs
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from homing import _json
from homing._uploader import _message, backoff_delay
from homing._version import __version__
from homing.push import CAMPAIGN_KEYS, PushMessage, parse_payload
from homing.wire import MAX_PUSH_SEQ, push_seq

if TYPE_CHECKING:
    from homing._network import NetworkPolicy

logger = logging.getLogger("homing")

Handler = Callable[[PushMessage], Any]
RecordFn = Callable[[str, dict[str, str]], None]

RECEIVED_FOREGROUND = "_campaign.received_foreground"
RECEIVED_BACKGROUND = "_campaign.received_background"
OPENED = "_campaign.opened_notification"

_CURSOR_KEY = "cursor"  # {"last_seq": int, "seen": [message ids, oldest first]}
_POLICY_RECHECK = 30.0
_AUTH_WAIT = 300.0
# The collector sends a heartbeat every 20 s by default: three missed ones mean the
# link is dead even if TCP has not noticed.
_READ_TIMEOUT = 65.0
# A connection that lived this long worked, even with nothing to say: the backoff starts
# again from its smallest after it.
_STEADY = 30.0
# SSE ends a line at CRLF, CR or LF, and nowhere else.
_LINE_END = re.compile(r"\r\n|\r|\n")
# A message's data is 4 KiB at most: a line this long is no push stream's.
_MAX_LINE = 1 << 20
# The collector's sequence numbers are signed 64-bit, and it refuses a Last-Event-ID above.


@dataclass(frozen=True)
class PushStats:
    """What the push receiver did since it was created.

    Example::

        stats = analytics.push.stats()
        print(stats.connected, stats.received, stats.duplicates, stats.last_error)
    """

    connected: bool = False
    connects: int = 0
    received: int = 0
    duplicates: int = 0
    handler_errors: int = 0
    errors: int = 0
    last_error: str | None = None


class Push:
    """The push receiver of one `Analytics`, reached as ``analytics.push``.

    Example::

        analytics.push.foreground = False  # the app went to the background
        analytics.push.start()
        ...
        analytics.push.stop()
    """

    def __init__(
        self,
        *,
        stream_url: str,
        acks_url: str,
        api_key: str,
        state: MutableMapping[str, Any],
        policy: NetworkPolicy,
        record: RecordFn,
        transport: httpx.BaseTransport | None = None,
        notifier: Handler | None = None,
        foreground: bool = True,
        max_seen: int = 1000,
        wait: Callable[[threading.Event, float], Any] | None = None,
    ) -> None:
        self.stream_url = stream_url
        self.acks_url = acks_url
        self.notifier = notifier
        self.foreground = foreground
        self.autostart = False  # start when the first handler is registered
        self.max_backoff = 60.0
        self.policy_recheck = _POLICY_RECHECK
        self.max_seen = max_seen
        self._policy = policy
        self._record = record
        self._state = state
        self._transport = transport
        self._wait = wait or (lambda event, seconds: event.wait(seconds))
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"homing-python/{__version__}",
        }
        self._push_handlers: list[Handler] = []
        self._silent_handlers: list[Handler] = []
        cursor = _load_cursor(state)
        self._last_seq: int = cursor[0]
        self._seen: dict[str, None] = dict.fromkeys(cursor[1])  # ordered: oldest first
        self._counts: dict[str, int] = {}
        self._last_error: str | None = None
        self._auth_logged = False
        self._reset_threading()

    def _reset_threading(self) -> None:
        self._lock = threading.RLock()
        # One stop event per thread: a thread that outlives stop() (stuck in a connect)
        # never comes back to life when start() makes the next one.
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._response: httpx.Response | None = None
        self._connected = False
        # The last connection proved to be a push stream (a message or a heartbeat came,
        # or it lived _STEADY seconds). A 200 alone proves nothing: a captive portal or a
        # proxy answers 200 and closes, and the backoff must grow against them too.
        self._alive = False

    # -- handlers -----------------------------------------------------------------------

    def on_push(self, handler: Handler) -> Handler:
        """Call `handler(message)` for every visible push; usable as a decorator."""
        self._push_handlers.append(handler)
        self._autostart()
        return handler

    def on_silent_push(self, handler: Handler) -> Handler:
        """Call `handler(message)` for every silent push; usable as a decorator."""
        self._silent_handlers.append(handler)
        self._autostart()
        return handler

    def _autostart(self) -> None:
        # Analytics(push=True) opens the stream with the first handler, so that no message
        # is handled (and acknowledged) before the app could see it.
        if self.autostart:
            self.autostart = False
            self.start()

    # -- the thread ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the receiver thread runs (connected or waiting to reconnect)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Open the push stream in a background daemon thread; calling it again does nothing.

        Example: ``analytics.push.start()``
        """
        with self._lock:
            if self.running:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="homing-push", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Close the push stream and stop the thread, waiting at most `timeout` seconds."""
        self.autostart = False
        self._stop.set()
        self._abort()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)  # a daemon: if it hangs anyway, it dies with the process
        self._thread = None
        if self._client is not None and (thread is None or not thread.is_alive()):
            self._client.close()
            self._client = None

    def after_fork_in_child(self) -> None:
        # The parent's thread and connection stay the parent's; the child starts with
        # none (two processes reading one endpoint's stream would compete).
        self._reset_threading()

    def stats(self) -> PushStats:
        """Counters since creation. Example: ``analytics.push.stats().received``."""
        counts = self._counts
        return PushStats(
            connected=self._connected,
            connects=counts.get("connects", 0),
            received=counts.get("received", 0),
            duplicates=counts.get("duplicates", 0),
            handler_errors=counts.get("handler_errors", 0),
            errors=counts.get("errors", 0),
            last_error=self._last_error,
        )

    def _run(self, stop: threading.Event) -> None:
        attempt = 0
        while not stop.is_set():
            if not self._allowed():
                self._wait(stop, self.policy_recheck)
                continue
            wait: float | None = None
            try:
                wait = self._stream_once(stop)
            except Exception as exc:
                if stop.is_set():
                    break
                self._error(f"{type(exc).__name__}: {exc or 'no detail'}")
            finally:
                if self._stop is stop:  # not a newer thread's connection
                    self._connected = False
                    self._response = None
            if stop.is_set():
                break
            attempt = 1 if self._alive else attempt + 1
            delay = backoff_delay(attempt, multiplier=0.5, maximum=self.max_backoff)
            delay = max(delay, wait or 0.0)
            logger.info("homing: the push stream closed; reconnecting in %.1f s", delay)
            self._wait(stop, delay)

    def _allowed(self) -> bool:
        try:
            return bool(self._policy.allows())
        except Exception:
            logger.warning("homing: the network policy failed; not connecting", exc_info=True)
            return False

    def _stream_once(self, stop: threading.Event) -> float | None:
        # One connection; returns a minimum wait before the next one, if any.
        self._alive = False
        client = self._http()
        headers = {**self._headers, "Accept": "text/event-stream"}
        if self._last_seq:
            headers["Last-Event-ID"] = str(self._last_seq)
        timeout = httpx.Timeout(10.0, connect=5.0, read=_READ_TIMEOUT)
        with client.stream("GET", self.stream_url, headers=headers, timeout=timeout) as resp:
            self._response = resp
            if stop.is_set():
                return None
            if resp.status_code != 200:
                resp.read()
                message = _message(resp)
                self._error(f"stream: {resp.status_code}: {message}")
                if resp.status_code in (401, 403, 404):
                    if not self._auth_logged:
                        self._auth_logged = True
                        logger.error("homing: the collector answered %d (%s) to the push "
                                     "stream; check the app id and the ingest key",
                                     resp.status_code, message)  # fmt: skip
                    return _AUTH_WAIT
                if resp.status_code == 400 and "Last-Event-ID" in message and self._last_seq:
                    # The collector will refuse this cursor on every reconnect, forever.
                    # Start again from its first unacknowledged message: the seen ids
                    # still keep a message already handled from being handled twice.
                    logger.warning(
                        "homing: the collector refused the push cursor %d; starting again "
                        "from the first message",
                        self._last_seq,
                    )
                    with self._lock:
                        self._last_seq = 0
                        self._save()
                return None
            content_type = resp.headers.get("content-type", "")
            if content_type.partition(";")[0].strip().lower() != "text/event-stream":
                # A captive portal's sign-in page, or a proxy's: not the collector.
                self._error(f"stream: 200 with content type {content_type[:80]!r}, not "
                            "text/event-stream (a captive portal or a proxy?)")  # fmt: skip
                return None
            self._connected = True
            self._auth_logged = False
            self._count("connects")
            opened = checked = time.monotonic()
            ended = False  # by the server, not by us
            try:
                for kind, event_id, data in _events(_lines(resp.iter_bytes())):
                    if stop.is_set():
                        break
                    if kind is None or data:  # a heartbeat, or an event with data
                        self._alive = True
                    if time.monotonic() - checked > self.policy_recheck:
                        checked = time.monotonic()
                        if not self._allowed():
                            logger.info(
                                "homing: the network policy says no; closing the push stream"
                            )
                            break
                    if kind == "push" and data:
                        self._on_stream_message(event_id, data)
                else:
                    ended = True
            finally:
                # However it ended (a read timeout, a reset), a connection that stayed
                # open this long was a good one: the backoff starts again.
                if time.monotonic() - opened >= _STEADY:
                    self._alive = True
            if ended and not self._alive and not stop.is_set():
                self._error("stream: the server closed it before any message or heartbeat")
        return None

    def _abort(self) -> None:
        # Wake a thread blocked reading the stream: shutting the socket down ends its read.
        response = self._response
        if response is None:
            return
        try:
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                sock.shutdown(socket.SHUT_RDWR)
        except Exception:
            logger.debug("homing: cannot shut the push socket down", exc_info=True)

    # -- messages -----------------------------------------------------------------------

    def _on_stream_message(self, event_id: str | None, data: str) -> None:
        # An id that is no push number (see homing.wire.push_seq) still brings its
        # message; it only moves no cursor.
        seq = push_seq(event_id)
        payload: Any = None
        try:
            payload = _json.loads(data)
            message = parse_payload(payload)
        except ValueError as exc:  # _json.JSONDecodeError is a ValueError too
            self._error(f"unreadable push message {event_id}: {exc}")
            message_id = payload.get("MessageId") if isinstance(payload, dict) else None
            if isinstance(message_id, str):
                self._ack([message_id])  # it can never be read: do not have it sent again
            return
        self.process(message, seq=seq)
        if message.message_id is not None:
            self._ack([message.message_id])

    def handle_payload(
        self, payload: Mapping[str, Any], *, message_id: str | None = None
    ) -> PushMessage | None:
        """Dispatch a payload the app got elsewhere (FCM, APNs) like a streamed message.

        Returns the message, or None if its id was handled before. Raises ValueError for
        a payload of no known shape.

        Example::

            # in a Kivy app, from the push library's message callback
            analytics.push.handle_payload(remote_message_data, message_id=remote_message_id)
        """
        message = parse_payload(payload, message_id=message_id)
        return message if self.process(message) else None

    def process(self, message: PushMessage, *, seq: int | None = None) -> bool:
        # Dispatch once per message id; True if dispatched, False for a duplicate.
        with self._lock:
            duplicate = message.message_id is not None and message.message_id in self._seen
            if duplicate:
                self._count("duplicates")
            else:
                self._count("received")
                self._dispatch(message)
                if message.message_id is not None:
                    self._seen[message.message_id] = None
                    while len(self._seen) > self.max_seen:
                        del self._seen[next(iter(self._seen))]
            if seq is not None and seq > self._last_seq:
                self._last_seq = seq
            if not duplicate or seq is not None:
                # Saved before the ack: an acked message is never dispatched again.
                self._save()
        return not duplicate

    def _dispatch(self, message: PushMessage) -> None:
        if message.campaign:
            self._record_campaign(
                RECEIVED_FOREGROUND if self.foreground else RECEIVED_BACKGROUND, message
            )
        handlers = list(self._silent_handlers if message.silent else self._push_handlers)
        if not message.silent and self.notifier is not None:
            handlers.append(self.notifier)
        for handler in handlers:
            try:
                handler(message)
            except Exception as exc:
                self._count("handler_errors")
                self._last_error = f"handler {getattr(handler, '__name__', handler)!s}: {exc!r}"
                logger.exception("homing: a push handler failed on message %s", message.message_id)

    def opened(self, message: PushMessage) -> None:
        """Record `_campaign.opened_notification` when the user opens a notification.

        Example::

            analytics.push.opened(message)  # in the notification's click callback
        """
        if not isinstance(message, PushMessage):
            raise TypeError(f"opened() takes a homing.PushMessage, not {type(message).__name__}")
        self._record_campaign(OPENED, message)

    def _record_campaign(self, event_type: str, message: PushMessage) -> None:
        attributes = {k: message.campaign[k][:200] for k in CAMPAIGN_KEYS if k in message.campaign}
        try:
            self._record(event_type, attributes)
        except Exception as exc:
            self._error(f"cannot record {event_type}: {exc!r}")

    def _http(self) -> httpx.Client:
        # The stream's thread and an ack may both come here first: one client, never two.
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(transport=self._transport)
            return self._client

    def _ack(self, message_ids: list[str]) -> None:
        try:
            response = self._http().post(
                self.acks_url,
                content=_json.dumps({"MessageIds": message_ids}),
                headers={**self._headers, "Content-Type": "application/json"},
                timeout=httpx.Timeout(10.0, connect=5.0),
            )
            if response.status_code not in (200, 202):
                self._error(f"ack: {response.status_code}: {_message(response)}")
        except Exception as exc:
            # Not acked: the collector sends it again, and the seen set makes it a duplicate.
            self._error(f"ack: {type(exc).__name__}: {exc}")

    def _save(self) -> None:
        try:
            self._state[_CURSOR_KEY] = {"last_seq": self._last_seq, "seen": list(self._seen)}
        except Exception as exc:
            self._error(f"cannot save the push cursor: {exc!r}")

    def _count(self, name: str) -> None:
        self._counts[name] = self._counts.get(name, 0) + 1

    def _error(self, error: str) -> None:
        self._count("errors")
        self._last_error = error
        logger.warning("homing: push: %s", error)


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    # The stream's lines, ended by CRLF, CR or LF only. httpx's iter_lines() follows
    # str.splitlines(), which also ends a line at U+2028, U+2029, U+0085 and more: JSON
    # may hold those unescaped in a string, and the message would be cut in two.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # SSE is UTF-8 only
    # The line so far, in pieces: only new text is searched for line ends, and a long
    # line is joined once, so its cost grows with its length, not with its square.
    pieces: list[str] = []
    size = 0
    after_cr = False  # the last chunk ended with CR: an LF opening the next one ends nothing
    for chunk in chunks:
        text = decoder.decode(chunk)
        if not text:
            continue
        if after_cr and text[0] == "\n":
            text = text[1:]
        start = 0
        for match in _LINE_END.finditer(text):
            pieces.append(text[start : match.start()])
            yield "".join(pieces)
            pieces, size = [], 0
            start = match.end()
        if start < len(text):
            pieces.append(text[start:])
            size += len(text) - start
        after_cr = start == len(text) and text.endswith("\r")
        if size > _MAX_LINE:
            raise ValueError(f"a line of the push stream is over {_MAX_LINE} characters")


def _events(lines: Iterable[str]) -> Iterator[tuple[str | None, str | None, str]]:
    # Server-Sent Events: fields until a blank line; comments start with ":" and come out
    # as kind None (the collector's heartbeat is one).
    kind: str = "message"
    event_id: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            # Yielded even when empty (a heartbeat): the reader checks the policy then.
            yield kind, event_id, "\n".join(data)
            kind, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            yield None, None, line[1:]
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


def _load_cursor(state: MutableMapping[str, Any]) -> tuple[int, list[str]]:
    try:
        cursor = state.get(_CURSOR_KEY)
    except Exception:
        logger.warning("homing: cannot read the push cursor", exc_info=True)
        return 0, []
    if not isinstance(cursor, dict):
        return 0, []
    last = cursor.get("last_seq")
    seen = cursor.get("seen")
    return (
        # One over 2**63-1 (saved by an older version) would be refused as Last-Event-ID.
        last if type(last) is int and 0 <= last <= MAX_PUSH_SEQ else 0,
        [item for item in seen if isinstance(item, str)] if isinstance(seen, list) else [],
    )
