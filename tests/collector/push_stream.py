"""A small Server-Sent Events reader for tests of the push stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson


@dataclass
class Event:
    """One SSE event, or one comment (`: ping`) when `comment` is set."""

    id: int | None = None
    event: str | None = None
    data: Any = None
    retry: int | None = None
    comment: str | None = None


class Stream:
    """GET .../endpoints/{id}/stream, read event by event."""

    def __init__(
        self,
        url: str,
        app_id: str,
        endpoint_id: str,
        token: str,
        *,
        last_event_id: int | str | None = None,
        timeout: float = 10.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.client = httpx.Client(timeout=timeout)
        self._context = self.client.stream(
            "GET", f"{url}/v1/apps/{app_id}/endpoints/{endpoint_id}/stream", headers=headers
        )
        self.response = self._context.__enter__()
        self._lines: Iterator[str] = self.response.iter_lines()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._context.__exit__(None, None, None)
        self.client.close()

    def next(self) -> Event | None:
        """The next event or comment; None when the server ended the stream."""
        event = Event()
        seen = False
        for line in self._lines:
            if line == "":
                if seen:
                    return event
                continue
            seen = True
            if line.startswith(":"):
                return Event(comment=line[1:].strip())
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                event.id = int(value)
            elif name == "event":
                event.event = value
            elif name == "data":
                event.data = orjson.loads(value)
            elif name == "retry":
                event.retry = int(value)
        return None

    def messages(self, count: int, timeout: float = 10.0) -> list[Event]:
        """The next `count` push events, skipping heartbeats, within `timeout` seconds."""
        found: list[Event] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            assert time.monotonic() < deadline, f"{len(found)} of {count} messages came"
            event = self.next()
            assert event is not None, f"the stream ended after {len(found)} of {count} messages"
            if event.event == "push":
                found.append(event)
        return found

    def backlog(self) -> list[Event]:
        """The push events sent before the first heartbeat: what was waiting on connect."""
        found: list[Event] = []
        while True:
            event = self.next()
            assert event is not None, "the stream ended before its first heartbeat"
            if event.comment == "ping":
                return found
            if event.event == "push":
                found.append(event)
