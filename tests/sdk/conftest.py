"""SDK fixtures: a fake clock, a scripted collector behind httpx.MockTransport."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import homing
from homing import _json

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeClock:
    now: float = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def accept_all(request: httpx.Request) -> httpx.Response:
    """Answer like the collector: every event 202."""
    batch = decode(request)["BatchItem"]
    results = {
        endpoint_id: {
            "EndpointItemResponse": {"StatusCode": 202, "Message": "Accepted"},
            "EventsItemResponse": {
                event_id: {"StatusCode": 202, "Message": "Accepted"} for event_id in item["Events"]
            },
        }
        for endpoint_id, item in batch.items()
    }
    return httpx.Response(202, json={"Results": results})


def decode(request: httpx.Request) -> Any:
    body = request.content
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return _json.loads(body)


def accept_endpoint(request: httpx.Request) -> httpx.Response:
    return httpx.Response(202, json={"Message": "Accepted", "RequestID": "r"})


@dataclass
class FakeCollector:
    """Records requests; `handler` answers PutEvents (accept_all unless replaced) and
    `endpoint_handler` UpdateEndpoint, which go to `endpoint_requests`."""

    handler: Handler = accept_all
    endpoint_handler: Handler = accept_endpoint
    requests: list[httpx.Request] = field(default_factory=list)
    endpoint_requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and "/endpoints/" in request.url.path:
            self.endpoint_requests.append(request)
            return self.endpoint_handler(request)
        self.requests.append(request)
        return self.handler(request)

    def profiles(self) -> list[dict[str, Any]]:
        """The body of every UpdateEndpoint, in order."""
        return [_json.loads(request.content) for request in self.endpoint_requests]

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def events(self) -> list[dict[str, Any]]:
        """Every event of every request, in order."""
        out = []
        for request in self.requests:
            for item in decode(request)["BatchItem"].values():
                out.extend(item["Events"].values())
        return out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake() -> FakeCollector:
    return FakeCollector()


@pytest.fixture
def make_analytics(
    tmp_path: Path, clock: FakeClock, fake: FakeCollector
) -> Iterator[Callable[..., homing.Analytics]]:
    """A factory for Analytics on tmp_path, the fake collector and the fake clock."""
    made: list[homing.Analytics] = []

    def make(**options: Any) -> homing.Analytics:
        options.setdefault("data_dir", tmp_path / "data")
        options.setdefault("transport", fake.transport)
        options.setdefault("clock", clock)
        options.setdefault("flush_interval", 3600.0)
        analytics = homing.Analytics("app1", "http://collector.test", "hm_ingest_test", **options)
        made.append(analytics)
        return analytics

    yield make
    for analytics in made:
        analytics.close()
