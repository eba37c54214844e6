"""Concurrent PutEvents clients that remember exactly what the collector acknowledged."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from tests.conftest import LiveCollector
import orjson

TIMESTAMP = "2026-11-28T10:00:00.000Z"
Key = tuple[str, str]  # (endpoint id, event id)


def new_batch(
    endpoints: list[str], events_per_endpoint: int, serial: int
) -> tuple[dict[str, Any], list[Key]]:
    """A PutEvents body with fresh event ids; each endpoint's profile changes every batch."""
    body: dict[str, Any] = {"BatchItem": {}}
    keys: list[Key] = []
    for endpoint_id in endpoints:
        events = {}
        for n in range(events_per_endpoint):
            event_id = uuid.uuid4().hex
            events[event_id] = {
                "EventType": f"load.{n % 5}",
                "Timestamp": TIMESTAMP,
                "Attributes": {"serial": str(serial)},
                "Metrics": {"n": n},
            }
            keys.append((endpoint_id, event_id))
        body["BatchItem"][endpoint_id] = {
            "Endpoint": {"Attributes": {"serial": [str(serial)]}},
            "Events": events,
        }
    return body, keys


def acknowledged_keys(response: httpx.Response, keys: list[Key]) -> list[Key]:
    """The events that `response` acknowledged: HTTP 202 and a per-event StatusCode 202."""
    if response.status_code != 202:
        return []
    results = response.json()["Results"]
    return [
        key
        for key in keys
        if results.get(key[0], {}).get("EventsItemResponse", {}).get(key[1], {}).get("StatusCode")
        == 202
    ]


def stored_events(where: Path | LiveCollector, app_id: str) -> dict[Key, int]:
    """Read the database itself (a SQLite file, or a collector's database on either
    backend): how many rows each (endpoint id, event id) of `app_id` has."""
    sql = (
        "SELECT endpoint_id, event_id, count(*) FROM events WHERE app_id = ?"
        " GROUP BY endpoint_id, event_id"
    )
    if isinstance(where, Path):
        with contextlib.closing(sqlite3.connect(where)) as db:
            rows = db.execute(sql, (app_id,)).fetchall()
    else:
        rows = where.query(sql, app_id)
    return {(endpoint_id, event_id): count for endpoint_id, event_id, count in rows}


class Traffic:
    """`clients` threads, each posting 100-event batches until the collector goes away.

    A client stops at its first transport error (the collector died or closed the
    connection), after `max_batches`, at `deadline` seconds, or when told to.
    """

    def __init__(
        self,
        url: str,
        app_id: str,
        token: str,
        *,
        clients: int = 8,
        endpoints_per_batch: int = 4,
        events_per_endpoint: int = 25,
        max_batches: int = 3000,
        deadline: float = 60.0,
    ) -> None:
        self.url = url
        self.path = f"/v1/apps/{app_id}/events"
        self.token = token
        self.clients = clients
        self.endpoints_per_batch = endpoints_per_batch
        self.events_per_endpoint = events_per_endpoint
        self.max_batches = max_batches
        self.deadline = deadline
        self.sent: set[Key] = set()
        self.acknowledged: set[Key] = set()
        self.batches_acknowledged = 0
        self.transport_errors: list[str] = []  # how each client ended, if by the network
        self.unexpected: list[str] = []  # anything but a full acknowledgement or a lost link
        self._finished = 0  # clients that ended otherwise
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @contextlib.contextmanager
    def running(self, join_timeout: float = 30.0) -> Iterator[Traffic]:
        stop_at = time.monotonic() + self.deadline
        self._threads = [
            threading.Thread(target=self._client, args=(i, stop_at), daemon=True)
            for i in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            give_up = time.monotonic() + join_timeout
            for thread in self._threads:
                thread.join(max(0.0, give_up - time.monotonic()))
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        assert not stuck, f"clients still running after {join_timeout} s: {stuck}"

    def wait_for(self, batches: int, timeout: float) -> bool:
        """Wait until `batches` batches were acknowledged, or every client stopped."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self.batches_acknowledged >= batches or self._all_stopped(), timeout
            ) and (self.batches_acknowledged >= batches)

    def wait_until_stopped(self, timeout: float) -> bool:
        """Wait until every client has stopped, for whatever reason."""
        with self._changed:
            return self._changed.wait_for(self._all_stopped, timeout)

    def summary(self) -> str:
        return (
            f"{self.batches_acknowledged} batches acknowledged, {len(self.acknowledged)} events; "
            f"transport errors: {self.transport_errors[:3]}; unexpected: {self.unexpected[:3]}"
        )

    def _all_stopped(self) -> bool:
        return len(self.transport_errors) + self._finished >= self.clients

    def _client(self, index: int, stop_at: float) -> None:
        endpoints = [f"client{index}-endpoint{n}" for n in range(self.endpoints_per_batch)]
        ended_by_network = False
        try:
            with httpx.Client(
                base_url=self.url,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=httpx.Timeout(30.0, connect=5.0),
            ) as client:
                for serial in range(self.max_batches):
                    if self._stop.is_set() or time.monotonic() > stop_at:
                        break
                    body, keys = new_batch(endpoints, self.events_per_endpoint, serial)
                    with self._changed:
                        self.sent.update(keys)
                    try:
                        response = client.post(
                            self.path,
                            content=orjson.dumps(body),
                            headers={"Content-Type": "application/json"},
                        )
                    except httpx.TransportError as exc:
                        with self._changed:
                            self.transport_errors.append(f"client {index}: {exc!r}")
                            ended_by_network = True
                        break
                    acknowledged = acknowledged_keys(response, keys)
                    with self._changed:
                        if len(acknowledged) != len(keys):
                            self.unexpected.append(
                                f"client {index}: {response.status_code} {response.text[:300]}"
                            )
                            break
                        self.acknowledged.update(acknowledged)
                        self.batches_acknowledged += 1
                        self._changed.notify_all()
        except BaseException as exc:  # a thread must not die silently
            with self._changed:
                self.unexpected.append(f"client {index}: {exc!r}")
        finally:
            with self._changed:
                if not ended_by_network:
                    self._finished += 1
                self._changed.notify_all()
