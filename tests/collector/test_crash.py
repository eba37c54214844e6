"""kill -9 loses nothing the collector acknowledged: a 202 is sent only after the commit."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
from collections.abc import Callable

import httpx
import orjson

from tests.collector.test_analytics_rollups import assert_rollups_match_events
from tests.collector.traffic import Traffic, acknowledged_keys, new_batch, stored_events
from tests.conftest import LiveCollector

# Acknowledged batches (of 100 events) before the kill: enough that commits are under way.
KILL_AFTER_BATCHES = 300


def test_sigkill_loses_no_acknowledged_event(
    start_collector: Callable[..., LiveCollector],
) -> None:
    live = start_collector()
    app = live.create_app("crash")
    traffic = Traffic(live.url, app.id, app.ingest.token, clients=8)
    assert live.process is not None
    with traffic.running():
        assert traffic.wait_for(KILL_AFTER_BATCHES, timeout=60), traffic.summary()
        live.process.kill()  # SIGKILL: no shutdown, no last commit, batches in flight
        assert live.process.wait(timeout=10) == -signal.SIGKILL
        # Every client ends at its next request: the collector is gone.
        assert traffic.wait_until_stopped(timeout=30), traffic.summary()
    assert traffic.unexpected == [], traffic.summary()
    assert len(traffic.transport_errors) == traffic.clients, traffic.summary()
    acknowledged = traffic.acknowledged
    assert len(acknowledged) >= KILL_AFTER_BATCHES * 100

    restarted = start_collector(live.db)
    stored = stored_events(live.db, app.id)
    missing = acknowledged - stored.keys()
    assert not missing, (
        f"{len(missing)} of {len(acknowledged)} acknowledged events were lost, "
        f"e.g. {sorted(missing)[:3]}"
    )
    assert set(stored.values()) == {1}, "an event is stored more than once"
    assert stored.keys() <= traffic.sent, "the database holds events nobody sent"
    with contextlib.closing(sqlite3.connect(live.db)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        endpoints = {row[0] for row in db.execute("SELECT endpoint_id FROM endpoints")}
    assert {endpoint_id for endpoint_id, _ in acknowledged} <= endpoints

    # The restarted collector takes new events, and a resent one is still stored once.
    headers = {"Authorization": f"Bearer {app.ingest.token}"}
    body, keys = new_batch(["after-restart"], 99, serial=0)
    resent = sorted(acknowledged)[0]
    with contextlib.closing(sqlite3.connect(live.db)) as db:
        (sent,) = db.execute(
            "SELECT body FROM events WHERE endpoint_id = ? AND event_id = ?", resent
        ).fetchone()
    body["BatchItem"][resent[0]] = {"Events": {resent[1]: orjson.loads(sent)}}  # as sent
    with httpx.Client(base_url=restarted.url, headers=headers, timeout=30) as client:
        response = client.post(f"/v1/apps/{app.id}/events", content=orjson.dumps(body))
    assert response.status_code == 202, response.text
    assert acknowledged_keys(response, [*keys, resent]) == [*keys, resent]
    stored = stored_events(live.db, app.id)
    assert all(stored.get(key) == 1 for key in [*keys, resent])
    # What the events add to the analytics rollups went in the same transactions (as
    # entries that a read folds in first): the rollups count each stored event once, the
    # resent one too, however the kill fell.
    response = httpx.get(
        f"{restarted.url}/v1/apps/{app.id}/analytics/usage",
        headers={"Authorization": f"Bearer {app.admin.token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    with contextlib.closing(sqlite3.connect(live.db)) as db:
        assert_rollups_match_events(db, app.id)
