"""Prometheus text-format metrics, kept in process."""

from __future__ import annotations

import bisect
from collections import Counter

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# queued: stored by SendMessages/SendUsersMessages; sent: written to a push stream (a
# message re-sent on reconnect counts again); delivered: acknowledged by the device;
# expired: deleted unacknowledged after its TTL; dropped: deleted to bound a queue.
PUSH_OUTCOMES = ("queued", "sent", "delivered", "expired", "dropped")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.events: Counter[str] = Counter()  # "accepted", "rejected"
        self.push: Counter[str] = Counter()  # PUSH_OUTCOMES
        self.push_streams = 0  # open push streams
        self._latency: dict[str, list[float]] = {}  # route -> [bucket counts..., +Inf, sum]

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        # A client picks the method; unknown ones share one series so they cannot grow
        # the metrics without bound.
        if method not in _METHODS:
            method = "other"
        self.requests[(route, method, status)] += 1
        row = self._latency.get(route)
        if row is None:
            row = self._latency[route] = [0.0] * (len(_BUCKETS) + 2)
        row[bisect.bisect_left(_BUCKETS, seconds)] += 1
        row[-1] += seconds

    def render(self) -> str:
        lines = [
            "# HELP homing_requests_total HTTP requests by route, method and status.",
            "# TYPE homing_requests_total counter",
        ]
        for (route, method, status), count in sorted(self.requests.items()):
            lines.append(
                f'homing_requests_total{{route="{route}",method="{method}",status="{status}"}}'
                f" {count}"
            )
        lines += [
            "# HELP homing_events_total Events received by PutEvents, by outcome.",
            "# TYPE homing_events_total counter",
        ]
        for outcome in ("accepted", "rejected"):
            lines.append(f'homing_events_total{{outcome="{outcome}"}} {self.events[outcome]}')
        lines += [
            "# HELP homing_push_messages_total Push messages, by what happened to them.",
            "# TYPE homing_push_messages_total counter",
        ]
        for outcome in PUSH_OUTCOMES:
            lines.append(f'homing_push_messages_total{{outcome="{outcome}"}} {self.push[outcome]}')
        lines += [
            "# HELP homing_push_streams Push streams open now.",
            "# TYPE homing_push_streams gauge",
            f"homing_push_streams {self.push_streams}",
            "# HELP homing_request_duration_seconds Time to answer a request, by route.",
            "# TYPE homing_request_duration_seconds histogram",
        ]
        for route, row in sorted(self._latency.items()):
            cumulative = 0.0
            for bound, in_bucket in zip((*_BUCKETS, "+Inf"), row[:-1], strict=True):
                cumulative += in_bucket
                lines.append(
                    f'homing_request_duration_seconds_bucket{{route="{route}",le="{bound}"}}'
                    f" {cumulative:g}"
                )
            lines.append(f'homing_request_duration_seconds_sum{{route="{route}"}} {row[-1]:.6f}')
            lines.append(f'homing_request_duration_seconds_count{{route="{route}"}} {cumulative:g}')
        return "\n".join(lines) + "\n"
