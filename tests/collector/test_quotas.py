"""Quotas per key and per application: 429 with Retry-After past them, other keys served
meanwhile, shared across forked workers, and an SDK that backs off and delivers all."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import homing
from homing_collector.quotas import Counters, Quotas, Rates
from homing_collector.settings import Settings
from tests.collector.traffic import new_batch, stored_events
from tests.conftest import LiveCollector

# The tests here start their own collectors, on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_backends


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_counter_lets_a_seconds_burst_through_then_the_rate() -> None:
    clock = Clock()
    counters = Counters(clock)
    key = [("key a", 10, "requests")]
    assert all(counters.take(key, 0, 1) is None for _ in range(10))  # a second's worth
    refusal = counters.take(key, 0, 1)
    assert refusal is not None and refusal.retry_after == pytest.approx(0.1)
    assert (
        refusal.message == "The key a is over its quota of 10 requests per second; retry after 1 s"
    )
    clock.now += 0.1
    assert counters.take(key, 0, 1) is None
    assert counters.take(key, 0, 1) is not None
    # The other counter of the same subject, and other subjects, are apart.
    assert counters.take(key, 1, 1) is None
    assert counters.take([("key b", 10, "requests")], 0, 1) is None


def test_a_cost_above_a_seconds_worth_passes_on_an_empty_counter_only() -> None:
    clock = Clock()
    counters = Counters(clock)
    events = [("key a", 100, "events")]
    assert counters.take(events, 1, 500) is None  # never refused forever
    refusal = counters.take(events, 1, 1)
    assert refusal is not None and refusal.retry_after == pytest.approx(4.01)
    clock.now += 5
    assert counters.take(events, 1, 100) is None


def test_a_refusal_charges_no_counter() -> None:
    clock = Clock()
    counters = Counters(clock)
    quotas = Quotas(Rates(key_requests=100, key_events=1, app_requests=2, app_events=1), counters)
    assert quotas.requests(quotas.defaults, "k1", "app") is None
    assert quotas.requests(quotas.defaults, "k2", "app") is None
    refusal = quotas.requests(quotas.defaults, "k3", "app")
    assert refusal is not None and refusal.subject == "application app"
    # k3 was not charged for the refused request: alone, it still has its whole burst.
    assert all(counters.take([("key k3", 100, "requests")], 0, 1) is None for _ in range(100))


def test_forked_workers_share_the_counters() -> None:
    counters = Counters()
    key = [("key shared", 5, "requests")]
    pid = os.fork()
    if pid == 0:  # the child takes the whole burst
        os._exit(0 if all(counters.take(key, 0, 1) is None for _ in range(5)) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert counters.take(key, 0, 1) is not None


def test_quotas_are_checked_settings() -> None:
    with pytest.raises(ValueError, match="quota_key_events must be from 1"):
        Settings.from_env({"HOMING_QUOTA_KEY_EVENTS": "0"}, db_path="x.db")
    settings = Settings.from_env({"HOMING_QUOTA_APP_REQUESTS": "7"}, db_path="x.db")
    assert settings.quota_app_requests == 7


def test_a_key_over_its_quota_gets_429_while_other_keys_are_served(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector(None, "--quota-key-requests", "5")
    app, other = live.create_app("noisy"), live.create_app("quiet")
    statuses: list[int] = []
    with httpx.Client(base_url=live.url, timeout=10) as client:
        for serial in range(30):
            body, _ = new_batch(["device"], 1, serial)
            response = client.post(
                f"/v1/apps/{app.id}/events", json=body,
                headers={"Authorization": f"Bearer {app.ingest.token}"},
            )  # fmt: skip
            statuses.append(response.status_code)
            if response.status_code == 429 and 429 not in statuses[:-1]:
                assert int(response.headers["retry-after"]) >= 1
                assert response.headers["x-amzn-ErrorType"] == "TooManyRequestsException"
                assert f"key {app.ingest.access_key_id} is over its quota" in response.text
                # Another app's key, and another key of the same app, go on meanwhile.
                for who, token in ((other, other.ingest.token), (app, app.admin.token)):
                    fine = client.post(
                        f"/v1/apps/{who.id}/events", json=body,
                        headers={"Authorization": f"Bearer {token}"},
                    )  # fmt: skip
                    assert fine.status_code == 202, fine.text
        metrics = client.get("/metrics").text
    assert statuses[:5] == [202] * 5 and 429 in statuses
    refused = statuses.count(429)
    assert f'homing_quota_refusals_total{{quota="requests"}} {refused}' in metrics


def test_an_sdk_over_its_event_quota_backs_off_and_delivers_everything(
    start_collector: Callable[..., LiveCollector], tmp_path: Path
) -> None:
    live = start_collector(None, "--quota-key-events", "150")
    app = live.create_app("sdk-quota")
    with homing.Analytics(app.id, live.url, app.ingest.token, data_dir=tmp_path / "sdk") as sdk:
        for i in range(600):
            sdk.record_event("Tap", attributes={"i": str(i)})
        refused_once = False
        deadline = time.monotonic() + 60
        while sdk.stats().queued:
            assert time.monotonic() < deadline, sdk.stats()
            result = sdk.flush(timeout=5)
            refused_once |= result.error is not None and result.error.startswith("429")
            time.sleep(0.2)
    assert refused_once
    stored = stored_events(live, app.id)
    assert len(stored) == 600 and set(stored.values()) == {1}


def test_an_application_sets_its_own_quotas_through_the_api(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector()
    app = live.create_app("own-quotas")
    root = {"Authorization": f"Bearer {live.root_key().token}"}
    admin = {"Authorization": f"Bearer {app.admin.token}"}
    url = f"{live.url}/v1/apps/{app.id}/quotas"
    with httpx.Client(timeout=10) as client:
        defaults = client.get(url, headers=admin).json()
        assert defaults == {
            "ApplicationId": app.id, "KeyRequestsPerSecond": 2_500, "KeyEventsPerSecond": 250_000,
            "RequestsPerSecond": 5_000, "EventsPerSecond": 500_000, "Own": [],
        }  # fmt: skip
        # Only a root key sets them: an application's admin may not raise its own.
        assert client.put(url, json={"EventsPerSecond": 10}, headers=admin).status_code == 403
        bad = client.put(url, json={"EventsPerSecond": 0}, headers=root)
        assert bad.status_code == 400 and "EventsPerSecond" in bad.json()["Message"]
        typo = client.put(url, json={"EventPerSecond": 10}, headers=root)
        assert typo.status_code == 400 and "EventPerSecond" in typo.json()["Message"]

        answer = client.put(url, json={"EventsPerSecond": 150}, headers=root).json()
        assert answer["EventsPerSecond"] == 150 and answer["Own"] == ["EventsPerSecond"]
        # Two keys of the application share its quota of 150 events per second.
        responses = []
        for serial, token in enumerate([app.ingest.token, app.admin.token] * 3):
            body, _ = new_batch(["device"], 100, serial)
            responses.append(
                client.post(
                    f"{live.url}/v1/apps/{app.id}/events",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
            )
        assert responses[0].status_code == 202
        refused = [r for r in responses if r.status_code == 429]
        assert refused, [r.status_code for r in responses]
        assert f"application {app.id} is over its quota of 150 events" in refused[0].text
        # null goes back to the default, and the rest stays as it was.
        client.put(url, json={"RequestsPerSecond": 9}, headers=root)
        answer = client.put(url, json={"EventsPerSecond": None}, headers=root).json()
        assert (answer["EventsPerSecond"], answer["RequestsPerSecond"]) == (500_000, 9)
        assert answer["Own"] == ["RequestsPerSecond"]


def test_workers_share_one_quota(start_collector: Callable[..., LiveCollector]) -> None:
    live = start_collector(None, "--workers", "2", "--quota-key-requests", "5")
    app = live.create_app("shared-quota")
    headers = {"Authorization": f"Bearer {app.ingest.token}"}
    started = time.monotonic()
    statuses = []
    for serial in range(40):
        body, _ = new_batch(["device"], 1, serial)
        # A new connection each time, so that the kernel spreads them over both workers.
        with httpx.Client(timeout=10) as client:
            response = client.post(
                f"{live.url}/v1/apps/{app.id}/events", json=body, headers=headers
            )
        statuses.append(response.status_code)
    elapsed = time.monotonic() - started
    accepted = statuses.count(202)
    assert set(statuses) <= {202, 429}
    # One burst of 5, then 5 per second: with a quota per worker it would be twice that.
    assert 5 <= accepted <= 5 + 5 * elapsed + 1, (accepted, elapsed)
