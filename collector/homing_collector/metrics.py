"""Prometheus text-format metrics, kept in process.

With `serve --workers N`, each scrape reaches one of the N processes. So that every one
answers for all of them, each worker writes a snapshot of its counts to its own slot of a
`Board` (memory the supervisor mapped before it forked) once a second, and a scrape adds
up the other workers' snapshots and its own live counts.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import mmap
import os
import struct
import time
from collections import Counter
from typing import Any

import orjson

from homing_collector.lifetime import alive

logger = logging.getLogger("homing_collector")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# queued: stored by SendMessages/SendUsersMessages; sent: written to a push stream (a
# message re-sent on reconnect counts again); delivered: acknowledged by the device;
# expired: deleted unacknowledged after its TTL; dropped: deleted to bound a queue.
PUSH_OUTCOMES = ("queued", "sent", "delivered", "expired", "dropped")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PUBLISH_INTERVAL = 1.0  # seconds between a worker's snapshots


class Board:
    """One slot per worker in shared memory, each holding that worker's latest snapshot.

    Create it before forking: the mapping is shared, anonymous, and gone with the last
    process that maps it, so nothing is left behind, not even after a SIGKILL. A slot
    starts with a sequence number, odd while its worker writes, and the snapshot's length.
    """

    SLOT_BYTES = 1 << 20
    _HEAD = struct.Struct("<QQ")  # sequence, length of the JSON that follows

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._map = mmap.mmap(-1, workers * self.SLOT_BYTES)

    def write(self, slot: int, snapshot: dict[str, Any]) -> bool:
        """Store a snapshot in `slot`; False if it does not fit (it is then left out)."""
        data = orjson.dumps(snapshot)
        if len(data) > self.SLOT_BYTES - self._HEAD.size:
            return False
        start = slot * self.SLOT_BYTES
        (sequence, _) = self._HEAD.unpack_from(self._map, start)
        self._HEAD.pack_into(self._map, start, sequence + 1, 0)  # odd: being written
        end = start + self._HEAD.size + len(data)
        self._map[start + self._HEAD.size : end] = data
        self._HEAD.pack_into(self._map, start, sequence + 2, len(data))
        return True

    def read(self, slot: int) -> dict[str, Any] | None:
        """The latest snapshot in `slot`, or None if there is none yet, or if its worker
        is still writing it after a few milliseconds (it stopped half-way)."""
        start = slot * self.SLOT_BYTES
        deadline = time.monotonic() + 0.005
        while True:
            (before, length) = self._HEAD.unpack_from(self._map, start)
            if before == 0:
                return None
            if not before % 2:
                data = self._map[start + self._HEAD.size : start + self._HEAD.size + length]
                if self._HEAD.unpack_from(self._map, start)[0] == before:
                    try:
                        snapshot = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        pass
                    else:
                        return snapshot if type(snapshot) is dict else None
            if time.monotonic() > deadline:
                return None


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        # "accepted", "rejected", and "accepted_without_device_credential" (among accepted)
        self.events: Counter[str] = Counter()
        self.push: Counter[str] = Counter()  # PUSH_OUTCOMES
        self.push_streams = 0  # open push streams
        self._latency: dict[str, list[float]] = {}  # route -> [bucket counts..., +Inf, sum]
        self.body_bytes: Counter[str] = Counter()  # route -> request body bytes read
        self.quota_refusals: Counter[str] = Counter()  # "requests" or "events" -> 429s
        # Hooks: attempts by (destination, outcome: delivered, retry, gone, failed), and the
        # gauges the outbox reads from the database (the same in every worker).
        self.hook_attempts: Counter[tuple[str, str]] = Counter()
        self.hook_gauges: dict[str, Any] = {}
        # In-process hooks (hooks/runner.py): calls and errors by (kind, name), kind being
        # filter, custom_delivery, event_stream, or load for an entry point that failed to
        # load; and per event-stream hook, the events stored after its cursor.
        self.hook_calls: Counter[tuple[str, str]] = Counter()
        self.hook_errors: Counter[tuple[str, str]] = Counter()
        self.hook_stream_lag: dict[str, int] = {}
        self._board: Board | None = None
        self._slot = 0
        self._too_big = False
        self._seen: dict[int, dict[str, Any]] = {}  # slot -> the last snapshot read there

    def observe(
        self, route: str, method: str, status: int, seconds: float, body_bytes: int = 0
    ) -> None:
        # A client picks the method; unknown ones share one series so they cannot grow
        # the metrics without bound.
        if method not in _METHODS:
            method = "other"
        self.requests[(route, method, status)] += 1
        self.body_bytes[route] += body_bytes  # += 0 too: every route seen has its series
        row = self._latency.get(route)
        if row is None:
            row = self._latency[route] = [0.0] * (len(_BUCKETS) + 2)
        row[bisect.bisect_left(_BUCKETS, seconds)] += 1
        row[-1] += seconds

    # -- several workers ------------------------------------------------------------------

    def share(self, board: Board, slot: int) -> None:
        """Count together with the other workers of `board`; this one owns `slot`."""
        self._board, self._slot = board, slot

    @property
    def shared(self) -> bool:
        return self._board is not None

    def publish(self) -> None:
        """Write this worker's counts to its slot, for the others' scrapes. It runs in the
        background, so a failure is logged, not raised: the next round tries again."""
        self._publish(self.snapshot())

    def _publish(self, snapshot: dict[str, Any]) -> None:
        if self._board is None:
            return
        try:
            fits = self._board.write(self._slot, snapshot)
        except Exception:
            logger.exception("metrics: could not publish this worker's counts")
            return
        if not fits and not self._too_big:
            self._too_big = True
            logger.warning(
                "metrics: this worker's counts no longer fit in %d bytes; the other workers'"
                " /metrics leave them out",
                Board.SLOT_BYTES,
            )

    async def publish_every(self, seconds: float = PUBLISH_INTERVAL) -> None:
        """Publish until cancelled."""
        while True:
            await asyncio.sleep(seconds)
            self.publish()

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "requests": [[*key, count] for key, count in self.requests.items()],
            "events": dict(self.events),
            "push": dict(self.push),
            "push_streams": self.push_streams,
            "latency": self._latency,
            "body_bytes": dict(self.body_bytes),
            "quota_refusals": dict(self.quota_refusals),
            "hook_attempts": [[*key, count] for key, count in self.hook_attempts.items()],
            "hook_gauges": self.hook_gauges,
            "hook_calls": [[*key, count] for key, count in self.hook_calls.items()],
            "hook_errors": [[*key, count] for key, count in self.hook_errors.items()],
            "hook_stream_lag": self.hook_stream_lag,
        }

    def _absorb(self, snapshot: dict[str, Any], *, alive: bool = True) -> None:
        for route, method, status, count in snapshot["requests"]:
            self.requests[(route, method, status)] += count
        self.events.update(snapshot["events"])
        for route, count in snapshot["body_bytes"].items():
            self.body_bytes[route] += count
        self.quota_refusals.update(snapshot.get("quota_refusals", {}))
        self.push.update(snapshot["push"])
        for destination, outcome, count in snapshot.get("hook_attempts", ()):
            self.hook_attempts[(destination, outcome)] += count
        for kind, name, count in snapshot.get("hook_calls", ()):
            self.hook_calls[(kind, name)] += count
        for kind, name, count in snapshot.get("hook_errors", ()):
            self.hook_errors[(kind, name)] += count
        for name, lag in snapshot.get("hook_stream_lag", {}).items():
            # Every worker reads the same cursors; a worker whose plugin is not loaded
            # reports none.
            self.hook_stream_lag[name] = max(lag, self.hook_stream_lag.get(name, 0))
        if not self.hook_gauges:  # each worker reads the same database: any one will do
            self.hook_gauges = snapshot.get("hook_gauges") or {}
        if alive:  # a worker that is gone holds no streams
            self.push_streams += snapshot["push_streams"]
        for route, row in snapshot["latency"].items():
            mine = self._latency.get(route)
            if mine is None:
                self._latency[route] = list(row)
            else:
                for i, value in enumerate(row):
                    mine[i] += value

    def _totals(self) -> Metrics:
        """This worker's counts and those the others published last.

        This worker publishes what it counts now first, so a later scrape that another
        worker answers sees at least as much: Prometheus takes a counter that goes down
        for a restart.
        """
        if self._board is None:
            return self
        own = self.snapshot()
        self._publish(own)
        totals = Metrics()
        totals._absorb(own)
        for slot in range(self._board.workers):
            if slot == self._slot:
                continue
            snapshot = self._board.read(slot)
            if snapshot is None:  # a worker stopped mid-write: what it published before
                snapshot = self._seen.get(slot)
            else:
                self._seen[slot] = snapshot
            if snapshot is not None:
                totals._absorb(snapshot, alive=alive(snapshot["pid"]))
        return totals

    # -- the text format ------------------------------------------------------------------

    def render(self) -> str:
        """Every metric in Prometheus text format; with a board, of every worker."""
        totals = self._totals()
        lines = [
            "# HELP homing_requests_total HTTP requests by route, method and status.",
            "# TYPE homing_requests_total counter",
        ]
        for (route, method, status), count in sorted(totals.requests.items()):
            lines.append(
                f'homing_requests_total{{route="{route}",method="{method}",status="{status}"}}'
                f" {count}"
            )
        lines += [
            "# HELP homing_request_body_bytes_total Request body bytes read, as sent, by route.",
            "# TYPE homing_request_body_bytes_total counter",
        ]
        for route, count in sorted(totals.body_bytes.items()):
            lines.append(f'homing_request_body_bytes_total{{route="{route}"}} {count}')
        lines += [
            "# HELP homing_quota_refusals_total Requests answered 429 for being over a key's"
            " or an application's quota, by the quota's kind.",
            "# TYPE homing_quota_refusals_total counter",
        ]
        for kind in ("requests", "events"):
            lines.append(
                f'homing_quota_refusals_total{{quota="{kind}"}} {totals.quota_refusals[kind]}'
            )
        lines += [
            "# HELP homing_events_total Events received by PutEvents, by outcome.",
            "# TYPE homing_events_total counter",
        ]
        for outcome in ("accepted", "rejected"):
            lines.append(f'homing_events_total{{outcome="{outcome}"}} {totals.events[outcome]}')
        lines += [
            "# HELP homing_events_without_device_credential_total Events accepted for an"
            " endpoint that has a device credential, from a caller without it.",
            "# TYPE homing_events_without_device_credential_total counter",
            "homing_events_without_device_credential_total"
            f" {totals.events['accepted_without_device_credential']}",
        ]
        lines += [
            "# HELP homing_push_messages_total Push messages, by what happened to them.",
            "# TYPE homing_push_messages_total counter",
        ]
        for outcome in PUSH_OUTCOMES:
            lines.append(
                f'homing_push_messages_total{{outcome="{outcome}"}} {totals.push[outcome]}'
            )
        lines += [
            "# HELP homing_push_streams Push streams open now.",
            "# TYPE homing_push_streams gauge",
            f"homing_push_streams {totals.push_streams}",
            *_hook_lines(totals),
            *_in_process_hook_lines(totals),
            "# HELP homing_request_duration_seconds Time to answer a request, by route.",
            "# TYPE homing_request_duration_seconds histogram",
        ]
        for route, row in sorted(totals._latency.items()):
            cumulative = 0  # counts are whole numbers: ":g" would print 1.23457e+06
            for bound, in_bucket in zip((*_BUCKETS, "+Inf"), row[:-1], strict=True):
                cumulative += int(in_bucket)
                lines.append(
                    f'homing_request_duration_seconds_bucket{{route="{route}",le="{bound}"}}'
                    f" {cumulative}"
                )
            lines.append(f'homing_request_duration_seconds_sum{{route="{route}"}} {row[-1]:.6f}')
            lines.append(f'homing_request_duration_seconds_count{{route="{route}"}} {cumulative}')
        return "\n".join(lines) + "\n"


def _hook_lines(totals: Metrics) -> list[str]:
    lines = [
        "# HELP homing_hook_attempts_total Webhook, event-stream and FILTER hook attempts, by"
        " destination.",
        "# TYPE homing_hook_attempts_total counter",
    ]
    attempts: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for (destination, outcome), count in totals.hook_attempts.items():
        attempts[destination] += count
        if outcome != "delivered":
            failures[destination] += count
    for destination, count in sorted(attempts.items()):
        lines.append(f'homing_hook_attempts_total{{destination="{_label(destination)}"}} {count}')
    lines += [
        "# HELP homing_hook_failures_total Delivery attempts that did not deliver, by destination.",
        "# TYPE homing_hook_failures_total counter",
    ]
    for destination in sorted(attempts):
        lines.append(
            f'homing_hook_failures_total{{destination="{_label(destination)}"}}'
            f" {failures[destination]}"
        )
    gauges = totals.hook_gauges
    pending = gauges.get("pending", {})
    dead = gauges.get("dead", {})
    destinations = sorted(set(pending) | set(dead) | set(attempts))
    lines += [
        "# HELP homing_hook_pending Deliveries waiting in the outbox, by destination.",
        "# TYPE homing_hook_pending gauge",
    ]
    for destination in destinations:
        count = pending.get(destination, (0, 0.0))[0]
        lines.append(f'homing_hook_pending{{destination="{_label(destination)}"}} {count}')
    lines += [
        "# HELP homing_hook_lag_seconds Age of the oldest delivery waiting, by destination.",
        "# TYPE homing_hook_lag_seconds gauge",
    ]
    for destination in destinations:
        lag = pending.get(destination, (0, 0.0))[1]
        lines.append(f'homing_hook_lag_seconds{{destination="{_label(destination)}"}} {lag:.3f}')
    lines += [
        "# HELP homing_hook_dead_letters Dead-lettered deliveries, by destination.",
        "# TYPE homing_hook_dead_letters gauge",
    ]
    for destination in destinations:
        lines.append(
            f'homing_hook_dead_letters{{destination="{_label(destination)}"}}'
            f" {dead.get(destination, 0)}"
        )
    streams = gauges.get("streams", {})
    lines += [
        "# HELP homing_event_stream_lag_events Events stored but not yet taken into an"
        " application's event stream (an upper bound: other applications' count too).",
        "# TYPE homing_event_stream_lag_events gauge",
    ]
    for app_id, (events, _seconds) in sorted(streams.items()):
        lines.append(f'homing_event_stream_lag_events{{application="{app_id}"}} {events}')
    lines += [
        "# HELP homing_event_stream_lag_seconds Age of the oldest event not yet taken into"
        " an application's event stream.",
        "# TYPE homing_event_stream_lag_seconds gauge",
    ]
    for app_id, (_events, seconds) in sorted(streams.items()):
        lines.append(f'homing_event_stream_lag_seconds{{application="{app_id}"}} {seconds:.3f}')
    return lines


def _in_process_hook_lines(totals: Metrics) -> list[str]:
    lines = [
        "# HELP homing_hook_calls_total Calls of in-process hooks, by kind and name.",
        "# TYPE homing_hook_calls_total counter",
    ]
    for (kind, name), count in sorted(totals.hook_calls.items()):
        lines.append(f'homing_hook_calls_total{{hook="{kind}",name="{_label(name)}"}} {count}')
    lines += [
        "# HELP homing_hook_errors_total Calls of in-process hooks that raised, timed out or"
        ' answered the wrong type, by kind and name; hook="load" counts entry points that'
        " could not be loaded.",
        "# TYPE homing_hook_errors_total counter",
    ]
    for kind, name in sorted(set(totals.hook_calls) | set(totals.hook_errors)):
        count = totals.hook_errors[(kind, name)]
        lines.append(f'homing_hook_errors_total{{hook="{kind}",name="{_label(name)}"}} {count}')
    lines += [
        "# HELP homing_hook_stream_lag_events Events stored but not yet given to an"
        " in-process event-stream hook, by name.",
        "# TYPE homing_hook_stream_lag_events gauge",
    ]
    for name, lag in sorted(totals.hook_stream_lag.items()):
        lines.append(f'homing_hook_stream_lag_events{{name="{_label(name)}"}} {lag}')
    return lines


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
