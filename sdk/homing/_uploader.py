"""The uploader: one daemon thread that ships stored events to the collector in batches.

What to retry follows the collector's contract: 429, 5xx, timeouts and network errors
keep the events and back off (exponential, full jitter, at least Retry-After); 401, 403
and 404 mean a misconfiguration, so the events are kept and the uploader waits long; a
400 for the whole request means the batch itself is unacceptable, so it is dropped and
counted, as resending it could never succeed.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import httpx
from tenacity import RetryCallState, wait_random_exponential

from homing import _json, limits
from homing._credential import DeviceCredential
from homing._store import Row, Store
from homing._types import Clock, FlushResult
from homing._version import __version__

if TYPE_CHECKING:
    from homing._endpoint import Endpoint
    from homing._network import NetworkPolicy

logger = logging.getLogger("homing")

Wait = Callable[[threading.Event, float], bool]

MAX_WAIT = 3600.0
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# Seconds at most that a refused endpoint update waits for the push thread's request for
# the device credential: as long as that request may take (TIMEOUT).
_SETTLE = 15.0
_ABANDONED: list[httpx.Client] = []
# Room for the BatchItem envelope and the endpoint profile inside MAX_BATCH_BYTES.
_ENVELOPE_BYTES = 16 * 1024
_POLICY_SAYS_NO = "the network policy does not allow sending now"


@dataclass
class Counters:
    # What the uploader did, shared with `Analytics.stats()`; guarded by `lock`.

    sent: int = 0
    rejected: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def drop(self, reason: str, count: int) -> None:
        with self.lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + count


@dataclass
class _Outcome:
    sent: int = 0
    rejected: int = 0
    error: str | None = None
    retry_now: bool = False


class Uploader:
    def __init__(
        self,
        *,
        store: Store,
        url: str,
        api_key: str,
        endpoint_id: str,
        profile: Callable[[], dict[str, Any]],
        policy: NetworkPolicy,
        flush_interval: float,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        transport: httpx.BaseTransport | None = None,
        wait: Wait | None = None,
        counters: Counters | None = None,
        endpoint: Endpoint | None = None,
        endpoint_url: str = "",
        credential: DeviceCredential | None = None,
    ) -> None:
        self.store = store
        self.credential = credential  # sent once the push receiver has got one
        self.endpoint = endpoint
        self.endpoint_url = endpoint_url
        self.url = url
        self.endpoint_id = endpoint_id
        self.profile = profile
        self.policy = policy
        self.flush_interval = flush_interval
        self.clock = clock  # timestamps and Retry-After dates
        self.monotonic = monotonic  # scheduling, which a wall clock set back must not hold up
        self.counters = counters or Counters()
        self.not_before = 0.0  # no request before this monotonic time (backoff)
        self.failures = 0
        self.batch_events = limits.MAX_EVENTS_PER_REQUEST
        self._transport = transport
        self._wait: Wait = wait or (lambda event, seconds: event.wait(seconds))
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": f"homing-python/{__version__}",
        }
        # UpdateEndpoint bodies go as they are; batches of events are gzipped.
        self._endpoint_headers = {k: v for k, v in self._headers.items() if k != "Content-Encoding"}
        self._auth_logged = False
        self._reset_threading()

    def _reset_threading(self) -> None:
        self._client: httpx.Client | None = None
        self._wake = threading.Event()
        self._endpoint_due = False
        self._batch_due = False  # a full batch waits: upload without waiting for the interval
        self._endpoint_sending = threading.Lock()
        # Batches of events on their way in this process's threads, and their settling.
        self._batches_out = 0
        self._batch_settled = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._next_flush = self.monotonic() + self.flush_interval

    def after_fork_in_child(self) -> None:
        # The parent's thread is gone and its pooled sockets are the parent's: start over,
        # keeping the old client referenced so that no finaliser touches those sockets.
        # Rows the parent had claimed keep its lease, so the child never resends them early.
        if self._client is not None:
            _ABANDONED.append(self._client)
        self._reset_threading()
        self.counters.lock = threading.Lock()

    # -- the background thread ----------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None or self._stopping:
            return
        with self._thread_lock:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="homing-uploader")
                self._thread.daemon = True  # never holds the interpreter's exit
                self._thread.start()

    def notify(self) -> None:
        # A full batch is waiting: upload now rather than at the next interval.
        self._batch_due = True
        self._wake.set()

    def notify_endpoint(self) -> None:
        # The profile should go now (a session started): send it alone, events wait.
        self._endpoint_due = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            # After a failure the next attempt is due when the backoff ends, which is
            # at most flush_interval away; otherwise at the next interval.
            due = self.not_before if self.failures else max(self._next_flush, self.not_before)
            self._wait(self._wake, max(due - self.monotonic(), 0.0))
            if self._stopping:
                break
            # Each wake-up says what it is for: a profile to send, a full batch, or both.
            self._wake.clear()
            batch_due, self._batch_due = self._batch_due, False
            try:
                if self._endpoint_due and self.monotonic() >= self.not_before:
                    self._endpoint_due = False
                    if self.policy.allows():
                        self.send_endpoint(None)
                self.tick(woken=batch_due)
                self.store.maintain()
            except Exception as exc:  # the host app must never see our failures
                if self._stopping:
                    return  # close() released the store under a request that was in flight
                logger.exception("homing: the uploader failed")
                self.counters.last_error = f"uploader: {exc!r}"
                # Try again at the next interval, not at once (and not in a loop).
                self.not_before = max(self.not_before, self.monotonic() + self.flush_interval)

    def tick(self, *, woken: bool = False) -> FlushResult | None:
        # One scheduling step: upload if due (interval passed, `woken`, or a retry) and no
        # backoff is running.
        now = self.monotonic()
        if now < self.not_before or not (woken or self.failures or now >= self._next_flush):
            return None
        self._next_flush = now + self.flush_interval
        # Counting the queue is a table scan: the background path leaves it out (-1).
        result = self.drain(None, count=False, wait_for_others=False)
        if result.error == _POLICY_SAYS_NO:
            # Not a failure to back off from, but an ended backoff must not make the
            # thread ask again at once: the next try is at the next interval.
            self.not_before = max(self.not_before, now + self.flush_interval)
        return result

    def close(self, timeout: float) -> FlushResult:
        # Stop the thread and make one last upload, all within `timeout` seconds.
        deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # An idle thread wakes and exits at once; one with a request in flight finishes
            # it (its answer deletes the batch) and stops before the next. A request that
            # hangs past the deadline is left to the daemon thread, which dies with the
            # process.
            thread.join(max(deadline - time.monotonic(), 0.0))
        try:
            return self.drain(deadline)
        finally:
            if self._client is not None:
                self._client.close()

    # -- uploading ----------------------------------------------------------------------

    def drain(
        self, deadline: float | None, *, count: bool = True, wait_for_others: bool = True
    ) -> FlushResult:
        # Send batches until the queue is empty, a request fails, or `deadline` passes.
        # Events another thread is sending (the background upload, say) are waited for,
        # if `wait_for_others`: they may come back to be sent, and `remaining` would
        # count them.
        sent = rejected = 0
        error: str | None = None
        while True:
            if deadline is None and self._stopping:
                break  # close() began: it sends the rest itself, within its deadline
            if deadline is not None and time.monotonic() >= deadline:
                error = "flush timed out"
                break
            if not self.policy.allows():
                error = _POLICY_SAYS_NO
                break
            failed = self.send_endpoint(deadline)
            if failed is not None:
                error = failed
                break
            with self._batch_settled:
                rows = self.store.claim(self.batch_events, limits.MAX_BATCH_BYTES - _ENVELOPE_BYTES)
                if rows:
                    self._batches_out += 1
                elif wait_for_others and self._batches_out:
                    wait = None if deadline is None else deadline - time.monotonic()
                    self._batch_settled.wait(wait)
                    continue
            if not rows:
                # Nothing left to retry (e.g. the retried batch was dropped with a 400):
                # the backoff is over, and the next upload is at the next interval.
                self.failures = 0
                break
            try:
                outcome = self._send(rows, deadline)
            finally:
                with self._batch_settled:
                    self._batches_out -= 1
                    self._batch_settled.notify_all()
            sent += outcome.sent
            rejected += outcome.rejected
            if outcome.error is not None and not outcome.retry_now:
                error = outcome.error
                break
        return FlushResult(sent, rejected, self.store.count() if count else -1, error)

    def _send(self, rows: list[Row], deadline: float | None) -> _Outcome:
        body = self._payload(rows)
        timeout = _timeout(deadline)
        try:
            response = self._http().post(
                self.url,
                content=gzip.compress(body, compresslevel=6),
                headers=self._with_credential(self._headers),
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            self.store.release(rows)
            return self._fail(f"{type(exc).__name__}: {exc or 'no detail'}", None)
        return self._handle(rows, response)

    def send_endpoint(self, deadline: float | None) -> str | None:
        # UpdateEndpoint with the current profile if it changed since the last send;
        # returns the error, if any. Events wait behind a profile that cannot go.
        if self.endpoint is None:
            return None
        # Never two sends at once: wait for the other thread's send (up to the deadline),
        # after which the profile is either sent or still due.
        wait = -1.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not self._endpoint_sending.acquire(timeout=wait):
            return "flush timed out"
        try:
            return self._send_endpoint(deadline)
        finally:
            self._endpoint_sending.release()

    def _send_endpoint(self, deadline: float | None) -> str | None:
        assert self.endpoint is not None
        pending = self.endpoint.pending(self.clock())
        if pending is None:
            return None
        version, profile = pending
        for _ in range(2):
            headers = self._with_credential(self._endpoint_headers)
            try:
                response = self._http().put(
                    self.endpoint_url,
                    content=_json.dumps(profile),
                    headers=headers,
                    timeout=_timeout(deadline),
                )
            except httpx.HTTPError as exc:
                error = f"endpoint: {type(exc).__name__}: {exc or 'no detail'}"
                return self._fail(error, None).error
            # The push thread may have been issued the credential while this went out
            # without it; the collector then refuses the bare key's change. Once more with
            # it, once the push thread's request for it (if one is in flight) has its answer.
            if response.status_code != 403 or self.credential is None:
                break
            self.credential.settle(_SETTLE if deadline is None else deadline - time.monotonic())
            if self._with_credential(headers) == headers:
                break
        status = response.status_code
        if status in (200, 202):
            self.endpoint.mark_sent(version)
            return None
        message = _message(response)
        self.counters.last_error = f"endpoint: {status}: {message}"
        if status == 400:
            # The collector will never take this profile: sending it again cannot help.
            self.endpoint.mark_sent(version, accepted=False)
            self.counters.drop("endpoint_rejected", 1)
            logger.warning("homing: the collector refused the endpoint profile: %s", message)
        else:
            # Kept for the next send; the events go on, and the profile rides with them.
            logger.info("homing: UpdateEndpoint answered %d (%s); retrying later", status, message)
        return None

    def _with_credential(self, headers: dict[str, str]) -> dict[str, str]:
        if self.credential is None:
            return headers
        return {**headers, **self.credential.headers()}

    def _http(self) -> httpx.Client:
        # The thread and a flush() may both come here first: one client, never two.
        with self._thread_lock:
            if self._client is None:
                self._client = httpx.Client(transport=self._transport, timeout=TIMEOUT)
            return self._client

    def _payload(self, rows: list[Row]) -> bytes:
        # The stored bodies are already JSON: splice them in rather than decode them.
        events = b",".join(_json.dumps(row.event_id) + b":" + row.body for row in rows)
        return b"".join(
            (
                b'{"BatchItem":{',
                _json.dumps(self.endpoint_id),
                b':{"Endpoint":',
                _json.dumps(self.profile()),
                b',"Events":{',
                events,
                b"}}}}",
            )
        )

    def _handle(self, rows: list[Row], response: httpx.Response) -> _Outcome:
        status = response.status_code
        if status in (200, 202):
            return self._per_event(rows, response)
        message = _message(response)
        if status == 413 and len(rows) > 1:
            # Smaller batches from now on; the same rows go again at once.
            self.store.release(rows)
            self.batch_events = max(1, len(rows) // 2)
            return _Outcome(error=f"413: {message}", retry_now=True)
        if status in (400, 413):
            self.store.delete(rows)
            reason = "bad_request" if status == 400 else "too_large"
            self.counters.drop(reason, len(rows))
            logger.warning("homing: the collector refused a batch of %d events (%d %s); "
                           "dropped it", len(rows), status, message)  # fmt: skip
            self.counters.last_error = f"{status}: {message}"
            return _Outcome(error=f"{status}: {message}", retry_now=True)
        self.store.release(rows)
        if status in (401, 403, 404):
            wait = min(10 * self.flush_interval, MAX_WAIT)
            if not self._auth_logged:
                self._auth_logged = True
                logger.error("homing: the collector answered %d (%s); check the app id and "
                             "the ingest key. Events are kept; retrying every %.0f s",
                             status, message, wait)  # fmt: skip
            self.not_before = self.monotonic() + wait
            self.counters.last_error = f"{status}: {message}"
            return _Outcome(error=f"{status}: {message}")
        return self._fail(f"{status}: {message}", _retry_after(response, self.clock()))

    def _per_event(self, rows: list[Row], response: httpx.Response) -> _Outcome:
        try:
            results = _json.loads(response.content)["Results"][self.endpoint_id]
            statuses = results["EventsItemResponse"]
        except (_json.JSONDecodeError, KeyError, TypeError):
            self.store.release(rows)
            return self._fail(f"{response.status_code} with an unreadable body", None)
        done: list[Row] = []
        keep: list[Row] = []
        rejected: list[tuple[Row, str]] = []
        for row in rows:
            item = statuses.get(row.event_id) if isinstance(statuses, dict) else None
            code = item.get("StatusCode") if isinstance(item, dict) else None
            if code == 202:
                done.append(row)
            elif code == 400:
                done.append(row)
                rejected.append((row, str(item.get("Message", "")) if item else ""))
            else:
                keep.append(row)  # no answer for it: send again later
        self.store.delete(done)
        self.store.release(keep)
        with self.counters.lock:
            self.counters.sent += len(done) - len(rejected)
            self.counters.rejected += len(rejected)
        if rejected:
            first, message = rejected[0]
            logger.warning("homing: the collector rejected %d event(s), e.g. %s: %s",
                           len(rejected), first.event_id, message)  # fmt: skip
            self.counters.last_error = f"rejected: {message}"
        outcome = _Outcome(sent=len(done) - len(rejected), rejected=len(rejected))
        if keep:
            failed = self._fail(f"no result for {len(keep)} event(s)", None)
            outcome.error = failed.error
            return outcome
        self.failures = 0
        self.not_before = 0.0
        self._auth_logged = False
        return outcome

    def _fail(self, error: str, retry_after: float | None) -> _Outcome:
        self.failures += 1
        wait = backoff_delay(
            self.failures, multiplier=1, minimum=1, maximum=max(self.flush_interval, 1)
        )
        if retry_after is not None:
            wait = max(wait, retry_after)
        self.not_before = self.monotonic() + min(wait, MAX_WAIT)
        self.counters.last_error = error
        logger.info("homing: upload failed (%s); next attempt in %.1f s", error, wait)
        return _Outcome(error=error)


def _timeout(deadline: float | None) -> httpx.Timeout:
    """The usual timeouts, cut short to what is left before `deadline` (monotonic)."""
    if deadline is None:
        return TIMEOUT
    left = max(deadline - time.monotonic(), 0.001)
    return httpx.Timeout(min(left, 10.0), connect=min(left, 5.0))


def backoff_delay(attempt: int, *, multiplier: float, maximum: float, minimum: float = 0) -> float:
    """Seconds to wait before retry number `attempt` (from 1): exponential, with full
    jitter, between `minimum` and `maximum` (tenacity's wait_random_exponential)."""
    strategy = wait_random_exponential(multiplier=multiplier, min=minimum, max=maximum)
    return float(strategy(cast(RetryCallState, SimpleNamespace(attempt_number=attempt))))


def _message(response: httpx.Response) -> str:
    try:
        return str(_json.loads(response.content).get("Message", ""))[:200]
    except (_json.JSONDecodeError, AttributeError):
        return response.reason_phrase


def _retry_after(response: httpx.Response, now: float) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(parsedate_to_datetime(value).timestamp() - now, 0.0)
    except (TypeError, ValueError):
        return None
