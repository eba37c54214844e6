"""In-process hooks: `create_app(hooks=...)` on a collector served by uvicorn on loopback,
entry points of the group `homing_collector.hooks` loaded by `serve --workers 2`, and the
runner that campaigns call, by name, for filters and custom deliveries (see
test_named_hooks.py for campaigns naming them)."""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import functools
import json
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from homing_collector import Hooks
from homing_collector.app import create_app
from homing_collector.hooks import hook_stream
from homing_collector.hooks import registry as registry_module
from homing_collector.hooks import runner as runner_module
from homing_collector.hooks.errors import HookResponseError
from homing_collector.hooks.registry import ENTRY_POINT_GROUP, Registry
from homing_collector.hooks.retry import RetryPolicy
from homing_collector.hooks.runner import HookRunner
from homing_collector.metrics import Metrics
from homing_collector.settings import Settings
from homing_collector.storage import hook_cursors
from homing_collector.storage.migrations import migrate
from tests.collector.test_docs import code_blocks, section
from tests.conftest import App, Credentials, LiveCollector, run_cli

# The tests here start their own collectors, on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_backends

HOOKS_MD = Path(__file__).resolve().parents[3] / "docs" / "hooks.md"


@contextlib.contextmanager
def serving(db: Path, hooks: Any = None, *, policy: RetryPolicy | None = None) -> Iterator[str]:
    """create_app(hooks=...) served by uvicorn on a free loopback port, in a thread;
    `policy` replaces the outbox's retry policy (24 h by default)."""
    app = create_app(Settings(db_path=db), hooks=hooks)
    if policy is not None:
        app.state.outbox.policy = policy
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, loop="asyncio", log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[sock]),))
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the collector did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def new_app(db: Path, name: str = "hooks") -> App:
    data = json.loads(run_cli("--db", str(db), "apps", "create", name, "--json"))
    return App(data["application_id"], Credentials(**data["ingest"]), Credentials(**data["admin"]))


def put_events(url: str, app: App, ids: list[str], *, event_type: str = "play") -> None:
    events = {
        event_id: {
            "EventType": event_type,
            "Timestamp": "2026-12-01T10:00:00.000Z",
            "Attributes": {"id": event_id},
            "Metrics": {"n": 1.0},
        }
        for event_id in ids
    }
    body = {"BatchItem": {"device-1": {
        "Endpoint": {"ChannelType": "GCM", "Demographic": {"Platform": "android"}},
        "Events": events,
    }}}  # fmt: skip
    response = httpx.post(
        f"{url}/v1/apps/{app.id}/events",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {app.ingest.token}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    results = response.json()["Results"]["device-1"]["EventsItemResponse"]
    assert {r["StatusCode"] for r in results.values()} == {202}, results


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def metric(url: str, line_start: str, default: float | None = None) -> float:
    """The value of the one metric line that starts so; `default` if there is none."""
    text = httpx.get(f"{url}/metrics").text
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)
    ]
    if not values and default is not None:
        return default
    assert len(values) == 1, f"{line_start!r} in:\n{text}"
    return values[0]


# -- create_app(hooks=...) ------------------------------------------------------------------


def test_event_stream_hooks_get_every_event_as_records(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    app = new_app(db)
    got_sync: list[dict[str, Any]] = []
    got_async: list[dict[str, Any]] = []
    loop_threads: set[str] = set()

    def sync_hook(records: list[dict[str, Any]]) -> None:
        loop_threads.add(threading.current_thread().name)
        got_sync.extend(records)

    async def async_hook(records: list[dict[str, Any]]) -> None:
        got_async.extend(records)

    hooks = [Hooks(event_stream=sync_hook, name="sync"), Hooks(event_stream=async_hook)]
    ids = [f"e{i}" for i in range(250)]
    with serving(db, hooks) as url:
        for start in range(0, len(ids), 100):
            put_events(url, app, ids[start : start + 100])
        put_events(url, app, ["c1"], event_type="_campaign.send")
        assert wait_for(lambda: len(got_sync) >= 251 and len(got_async) >= 251)
        assert metric(url, 'homing_hook_calls_total{hook="event_stream",name="sync"}') >= 1
        async_name = f"{__name__}.{async_hook.__qualname__}"
        assert metric(url, f'homing_hook_calls_total{{hook="event_stream",name="{async_name}"}}')

    for got in (got_sync, got_async):
        assert [r["event_id"] for r in got] == [*ids, "c1"]  # once each, in the order stored
    record = got_sync[0]
    assert record["event_type"] == "play"
    assert record["event_timestamp"] == 1796119200000  # 2026-12-01T10:00:00Z
    assert isinstance(record["arrival_timestamp"], int)
    assert record["event_version"] == "3.1"
    assert record["application"]["app_id"] == app.id
    assert record["client"] == {"client_id": "device-1"}
    assert record["device"]["platform"] == {"name": "android"}
    assert record["attributes"] == {"id": "e0"} and record["metrics"] == {"n": 1.0}
    assert record["endpoint"]["ChannelType"] == "GCM"
    campaign = got_sync[-1]
    assert "endpoint" not in campaign
    assert json.loads(campaign["client_context"]["custom"]["endpoint"])["ChannelType"] == "GCM"
    # A sync hook runs in the runner's threads, never on the event loop's.
    assert loop_threads and all(name.startswith("homing-hook") for name in loop_threads)


def test_a_failing_hook_never_fails_put_events_and_gets_its_batch_again(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    app = new_app(db)
    calls = 0
    got: list[str] = []

    def flaky(records: list[dict[str, Any]]) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("the warehouse is down")
        got.extend(r["event_id"] for r in records)

    name = 'homing_hook_errors_total{hook="event_stream",name="flaky"}'
    with serving(db, Hooks(event_stream=flaky, name="flaky")) as url:
        put_events(url, app, ["a", "b"])
        assert wait_for(lambda: metric(url, name, 0) >= 1)
        put_events(url, app, ["c"])  # 202 while the hook fails
        assert wait_for(lambda: "c" in got)
        assert metric(url, name) == 2
        assert metric(url, 'homing_hook_stream_lag_events{name="flaky"}') >= 0
    assert got[:2] == ["a", "b"] and set(got) == {"a", "b", "c"}


def test_a_hook_gets_what_was_stored_while_it_was_not_running(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    app = new_app(db)
    got: list[str] = []

    def hook(records: list[dict[str, Any]]) -> None:
        got.extend(r["event_id"] for r in records)

    with serving(db, Hooks(event_stream=hook, name="warehouse")) as url:
        put_events(url, app, ["before"])
        assert wait_for(lambda: got == ["before"])
    with serving(db) as url:  # no hook: its cursor waits in the database
        put_events(url, app, ["while-down-1", "while-down-2"])
    with serving(db, Hooks(event_stream=hook, name="warehouse")) as url:
        put_events(url, app, ["after"])
        assert wait_for(lambda: len(got) == 4)
    assert got == ["before", "while-down-1", "while-down-2", "after"]


def test_a_new_hook_starts_with_the_events_stored_after_it(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    app = new_app(db)
    got: list[str] = []
    with serving(db) as url:
        put_events(url, app, ["old"])
    with serving(db, Hooks(event_stream=lambda rs: got.extend(r["event_id"] for r in rs),
                           name="new")) as url:  # fmt: skip
        put_events(url, app, ["new"])
        assert wait_for(lambda: got == ["new"])


def test_hooks_must_be_hooks_of_distinct_names(tmp_path: Path) -> None:
    settings = Settings(db_path=tmp_path / "collector.db")
    with pytest.raises(TypeError, match=r"homing_collector\.Hooks"):
        create_app(settings, hooks=[lambda records: None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="'twice' is already registered"):
        create_app(settings, hooks=[Hooks(filter=print, name="twice")] * 2)
    with pytest.raises(TypeError, match=r"Hooks\.event_stream: must be a callable"):
        Hooks(event_stream="print")  # type: ignore[arg-type]


def test_a_cursor_past_deleted_events_moves_back_to_the_last_left() -> None:
    # SQLite gives a new row the rowid after the largest left: a cursor left past deleted
    # rows would skip the events that take their rowids again.
    with contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        migrate(conn)
        conn.executemany(
            "INSERT INTO events (app_id, endpoint_id, event_id, event_type, ts, arrival, body,"
            " hour) VALUES ('a', 'd', ?, 't', 0, 0, x'7b7d', 0)",
            [(f"e{i}",) for i in range(5)],
        )
        assert hook_cursors.ensure(conn, ["h", "behind"]) == {"h": 5, "behind": 5}
        assert hook_cursors.advance(conn, "behind", 5, 2) and not hook_cursors.advance(
            conn, "h", 4, 1
        )
        conn.execute("DELETE FROM events WHERE rowid > 3")
        hook_cursors.events_deleted(conn)
        assert hook_cursors.get(conn, "h") == 3 and hook_cursors.get(conn, "behind") == 2
        assert [r.event_id for r in hook_cursors.rows(conn, 2, 10)] == ["e2"]


# -- entry points -----------------------------------------------------------------------------

PLUGIN = """
import json, os, time
from homing_collector import Hooks

def write(records):
    time.sleep(0.3)  # slow: two workers calling it would both take each batch
    with open(os.environ["PLUGIN_OUT"], "a") as out:
        out.write("".join(json.dumps(r) + "\\n" for r in records))

hooks = Hooks(event_stream=write)

def make():
    return Hooks(filter=lambda request: request["Endpoints"])

def broken():
    raise RuntimeError("this plugin is broken")
"""

ENTRY_POINTS = """\
[homing_collector.hooks]
warehouse = homing_plugin_test:hooks
factory = homing_plugin_test:make
broken = homing_plugin_test:broken
"""


def test_entry_points_load_in_every_worker(
    start_collector: Callable[..., LiveCollector],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = tmp_path / "site"
    dist = site / "homing_plugin_test-1.0.dist-info"
    dist.mkdir(parents=True)
    (site / "homing_plugin_test.py").write_text(PLUGIN)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: homing-plugin-test\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    out = tmp_path / "records.ndjson"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PLUGIN_OUT", str(out))

    live = start_collector(None, "--workers", "2")
    app = live.create_app()
    ids = [f"w{i}" for i in range(300)]
    for start in range(0, len(ids), 100):
        put_events(live.url, app, ids[start : start + 100])

    def written() -> list[str]:
        if not out.exists():
            return []
        return [json.loads(line)["event_id"] for line in out.read_text().splitlines()]

    assert wait_for(lambda: len(written()) >= len(ids))
    time.sleep(1)  # a second worker calling the hook too would have written by now
    assert written() == ids  # one worker at a time holds the stream: once each, in order
    url = live.url
    assert metric(url, 'homing_hook_errors_total{hook="load",name="broken"}') == 2  # 2 workers
    assert metric(url, 'homing_hook_errors_total{hook="event_stream",name="warehouse"}') == 0
    assert "could not be loaded" in (live.log.read_text() if live.log else "")


# -- the runner, as the scheduler calls it ------------------------------------------------------

ENDPOINTS = {
    "a": {"ChannelType": "CUSTOM", "Address": "a@example.com"},
    "b": {"ChannelType": "CUSTOM", "Address": "b@example.com"},
}
REQUEST = {"MessageConfiguration": {"CustomMessage": {"Data": "hi"}}, "ApplicationId": "app",
           "CampaignId": "c", "TreatmentId": "0", "ActivityId": "x",
           "ScheduledTime": "2026-12-01T10:00:00.000Z", "Endpoints": ENDPOINTS}  # fmt: skip


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (the project runs no asyncio plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def runner_of(*hooks: Hooks, timeout: float = 5) -> HookRunner:
    registry = Registry()
    registry.add_given(list(hooks))
    return HookRunner(registry, Metrics(), timeout=timeout)


def errors(runner: HookRunner) -> dict[tuple[str, str], int]:
    return dict(runner.metrics.hook_errors)


@in_loop
async def test_a_filter_is_called_by_its_name_sync_or_async() -> None:
    def drop_b(request: dict[str, Any]) -> dict[str, Any]:
        request["Endpoints"].clear()  # changes its own copy only
        return {"a": ENDPOINTS["a"]}

    async def rewrite(request: dict[str, Any]) -> dict[str, Any]:
        assert request["MessageConfiguration"] == REQUEST["MessageConfiguration"]
        return {k: {**v, "BodyOverride": "hello"} for k, v in request["Endpoints"].items()}

    runner = runner_of(Hooks(filter=drop_b, name="one"), Hooks(filter=rewrite, name="two"))
    assert await runner.filter("one", REQUEST) == {"a": ENDPOINTS["a"]}
    assert await runner.filter("two", REQUEST) == {
        k: {**v, "BodyOverride": "hello"} for k, v in ENDPOINTS.items()
    }  # not chained: each filter gets the endpoints sent
    assert await runner.filter("two", REQUEST) != await runner.filter("one", REQUEST)
    assert ENDPOINTS["a"] == {"ChannelType": "CUSTOM", "Address": "a@example.com"}  # untouched
    assert dict(runner.metrics.hook_calls) == {("filter", "one"): 2, ("filter", "two"): 2}
    assert errors(runner) == {}
    with pytest.raises(HookResponseError, match=r"no filter hook named 'three'.*'one', 'two'"):
        await runner.filter("three", REQUEST)
    with pytest.raises(HookResponseError, match="no filter hook is registered at all"):
        await runner_of().filter("one", REQUEST)
    await runner.close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (RuntimeError("boom"), "raised RuntimeError: boom"),
        (["a"], "answer is a list"),
        ({"z": {}}, "Endpoints.z: was not in the batch sent"),
        ({"a": "x"}, "Endpoints.a: must be an endpoint definition"),
        ({"a": {"BodyOverride": 3}}, "Endpoints.a.BodyOverride: must be a string"),
    ],
)
@pytest.mark.parametrize("is_async", [False, True])
@in_loop
async def test_a_filter_that_fails_fails_the_batch(
    answer: Any, message: str, is_async: bool
) -> None:
    def sync_filter(request: dict[str, Any]) -> Any:
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def async_filter(request: dict[str, Any]) -> Any:
        return sync_filter(request)

    runner = runner_of(Hooks(filter=async_filter if is_async else sync_filter, name="f"))
    with pytest.raises(HookResponseError, match=message):
        await runner.filter("f", REQUEST)
    assert errors(runner) == {("filter", "f"): 1}
    await runner.close()


@in_loop
async def test_a_slow_sync_filter_times_out_without_blocking_the_loop() -> None:
    def slow(request: dict[str, Any]) -> Any:
        time.sleep(1.0)
        return request["Endpoints"]

    runner = runner_of(Hooks(filter=slow, name="slow"), timeout=0.3)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    with pytest.raises(HookResponseError, match=r"did not return within 0\.3 s"):
        await runner.filter("slow", REQUEST)
    assert time.monotonic() - started < 0.9
    ticker.cancel()
    assert ticks >= 10  # the loop kept running while the hook slept
    assert errors(runner) == {("filter", "slow"): 1}
    await runner.close()


@in_loop
async def test_a_custom_delivery_is_called_by_its_name_and_its_failure_raised() -> None:
    got: dict[str, Any] = {}

    def sync_delivery(payload: dict[str, Any]) -> None:
        payload["Endpoints"].clear()  # changes its own copy only
        got["sync"] = payload

    async def async_delivery(payload: dict[str, Any]) -> None:
        got["async"] = payload

    def failing(payload: dict[str, Any]) -> None:
        raise ValueError("smtp is down")

    payload = {"Message": {}, "Data": "hi", **{k: v for k, v in REQUEST.items()
               if k not in ("MessageConfiguration",)}}  # fmt: skip
    runner = runner_of(
        Hooks(custom_delivery=sync_delivery, name="s"),
        Hooks(custom_delivery=failing, name="x"),
        Hooks(custom_delivery=async_delivery, name="a"),
    )
    await runner.custom_delivery("a", payload)
    assert got == {"async": payload}  # the one named, only
    await runner.custom_delivery("s", payload)
    assert got["sync"]["Endpoints"] == {} and payload["Endpoints"] == ENDPOINTS
    with pytest.raises(HookResponseError, match="'x' raised ValueError: smtp is down"):
        await runner.custom_delivery("x", payload)
    assert errors(runner) == {("custom_delivery", "x"): 1}
    assert sum(runner.metrics.hook_calls.values()) == 3
    with pytest.raises(HookResponseError, match="no custom_delivery hook named 'gone'"):
        await runner.custom_delivery("gone", payload)
    assert sum(runner.metrics.hook_calls.values()) == 3  # no hook was called
    await runner.close()


# -- docs/hooks.md --------------------------------------------------------------------------


def test_the_docs_example_plugin_registers() -> None:
    text = section(HOOKS_MD.read_text(), "Registering hooks")
    (python,) = code_blocks(text, "python")
    namespace: dict[str, Any] = {}
    exec(compile(python, str(HOOKS_MD), "exec"), namespace)
    hooks = namespace["hooks"]
    assert isinstance(hooks, Hooks) and hooks.name == "warehouse"
    request = {**REQUEST, "Endpoints": {**ENDPOINTS, "b": {**ENDPOINTS["b"], "OptOut": "ALL"}}}
    assert asyncio.run(runner_of(hooks).filter("warehouse", request)) == {"a": ENDPOINTS["a"]}
    (toml,) = code_blocks(text, "toml")
    assert toml.startswith(f'[project.entry-points."{ENTRY_POINT_GROUP}"]\n')


def test_the_docs_figures_and_metrics_are_the_codes() -> None:
    text = HOOKS_MD.read_text()
    part = section(text, "In-process hooks")
    assert f"up to {hook_stream.BATCH_EVENTS} [event-stream records]" in part
    assert f"({runner_module.MAX_THREADS} at most at once)" in part
    assert f"within {runner_module.CALL_TIMEOUT:g} seconds" in part
    assert f"within {hook_stream.LEASE_TTL:g} seconds" in part
    assert (hook_stream.FIRST_BACKOFF, hook_stream.MAX_BACKOFF) == (
        1,
        60,
    )  # "a second ... a minute"
    metrics = Metrics()
    metrics.hook_calls[("event_stream", "n")] += 1
    metrics.hook_stream_lag["n"] = 0
    rendered = metrics.render()
    documented = re.findall(r"^\| `(homing_hook_[a-z_]+)` \|", part, re.MULTILINE)
    assert documented == [
        "homing_hook_calls_total",
        "homing_hook_errors_total",
        "homing_hook_stream_lag_events",
    ]
    for name in documented:
        assert f"\n{name}{{" in rendered


def test_the_hooks_docstring_example_runs() -> None:
    result = doctest.testmod(registry_module)
    assert result.attempted > 0 and result.failed == 0
