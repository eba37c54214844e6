"""The push receiver against a small push gateway on loopback (real uvicorn, real sockets)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import homing
from homing import _json
from homing._network import coerce_policy
from homing._push import Push, _lines
from tests.sdk.push_gateway import Answer, Gateway, RawServer, sse

CAMPAIGN = {
    "pinpoint.campaign.campaign_id": "camp-1",
    "pinpoint.campaign.campaign_activity_id": "act-1",
    "pinpoint.campaign.treatment_id": "0",
}


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    live = Gateway().start()
    yield live
    live.stop()


@pytest.fixture
def make(tmp_path: Path, gateway: Gateway) -> Iterator[Callable[..., homing.Analytics]]:
    made: list[homing.Analytics] = []

    def make_one(**options: Any) -> homing.Analytics:
        options.setdefault("data_dir", tmp_path / "sdk")
        options.setdefault("flush_interval", 3600.0)
        analytics = homing.Analytics("app1", gateway.url, "hm_ingest_test", **options)
        analytics.push.max_backoff = 0.2
        made.append(analytics)
        return analytics

    yield make_one
    for analytics in made:
        analytics.close()


@pytest.fixture
def raw() -> Iterator[Callable[..., tuple[RawServer, Push]]]:
    """A RawServer and a receiver reading it, with a short backoff; both stopped after."""
    made: list[tuple[RawServer, Push]] = []

    def make_one(
        answer: Callable[[dict[str, str]], Answer],
        state: dict[str, Any] | None = None,
        hold: float = 0.3,
        **options: Any,
    ) -> tuple[RawServer, Push]:
        server = RawServer(answer, hold=hold)
        push = Push(stream_url=server.url, acks_url=server.url + "/acks", api_key="k",
                    state={} if state is None else state, policy=coerce_policy("any"),
                    record=lambda *a: None, **options)  # fmt: skip
        push.max_backoff = 0.2
        made.append((server, push))
        return server, push

    yield make_one
    for server, push in made:
        push.stop()
        server.stop()


def stored_events(data_dir: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(data_dir / "events.sqlite3")) as conn:
        return [_json.loads(body) for (body,) in conn.execute("SELECT body FROM events")]


def test_a_message_reaches_on_push_once_and_is_acked(
    make: Callable[..., homing.Analytics], gateway: Gateway
) -> None:
    analytics = make()
    got: list[homing.PushMessage] = []
    analytics.on_push(got.append)
    gateway.send({"pinpoint.notification.title": "Hi", "k": "v"}, message_id="m1")
    analytics.push.start()
    wait_for(lambda: gateway.acked == ["m1"])
    assert [(m.message_id, m.title, m.data) for m in got] == [("m1", "Hi", {"k": "v"})]
    assert gateway.connections[0]["authorization"] == "Bearer hm_ingest_test"
    assert gateway.connections[0]["accept"] == "text/event-stream"
    stats = analytics.push.stats()
    assert (stats.connected, stats.connects, stats.received) == (True, 1, 1)
    # A live message, after the backlog.
    gateway.send({"pinpoint.notification.title": "Live"}, message_id="m2")
    wait_for(lambda: len(got) == 2)
    assert got[1].title == "Live"


def test_a_message_sent_again_is_dispatched_once_and_acked_again(
    make: Callable[..., homing.Analytics], gateway: Gateway
) -> None:
    analytics = make()
    got: list[str | None] = []
    analytics.on_push(lambda message: got.append(message.message_id))
    gateway.send({"pinpoint.notification.title": "Once"}, message_id="dup")
    gateway.send({"pinpoint.notification.title": "Once"}, message_id="dup")  # re-sent, new seq
    analytics.push.start()
    wait_for(lambda: analytics.push.stats().duplicates == 1)
    assert got == ["dup"]


def test_seen_ids_and_the_last_id_survive_a_restart(
    make: Callable[..., homing.Analytics], gateway: Gateway, tmp_path: Path
) -> None:
    first = make()
    got: list[str | None] = []
    first.on_push(lambda message: got.append(message.message_id))
    gateway.send({"pinpoint.notification.title": "A"}, message_id="a")
    first.push.start()
    wait_for(lambda: got == ["a"] and gateway.acked == ["a"])
    first.close()
    # The collector lost the ack and sends "a" again, under a new sequence number.
    gateway.acked.clear()
    gateway.send({"pinpoint.notification.title": "A"}, message_id="a")
    gateway.send({"pinpoint.notification.title": "B"}, message_id="b")
    second = make(push=True)
    second.on_push(lambda message: got.append(message.message_id))
    wait_for(lambda: sorted(gateway.acked) == ["a", "b"])
    assert got == ["a", "b"]
    assert gateway.connections[-1]["last-event-id"] == "1"


def test_silent_pushes_go_to_silent_handlers_only_and_the_notifier_sees_visible_ones(
    make: Callable[..., homing.Analytics], gateway: Gateway
) -> None:
    shown: list[str | None] = []
    analytics = make(notifier=lambda message: shown.append(message.title))
    visible: list[str | None] = []
    silent: list[dict[str, Any]] = []

    @analytics.on_push
    def on_visible(message: homing.PushMessage) -> None:
        visible.append(message.message_id)

    @analytics.on_silent_push
    def on_silent(message: homing.PushMessage) -> None:
        silent.append(message.data)

    gateway.send({"pinpoint.notification.silentPush": "1", "theme": "dark"}, message_id="s",
                 silent=True)  # fmt: skip
    gateway.send({"pinpoint.notification.title": "Shown"}, message_id="v")
    analytics.push.start()
    wait_for(lambda: len(gateway.acked) == 2)
    assert visible == ["v"] and silent == [{"theme": "dark"}] and shown == ["Shown"]
    assert on_visible.__name__ == "on_visible"  # the decorator returns the function


def test_a_handler_that_raises_does_not_stop_the_receiver(
    make: Callable[..., homing.Analytics], gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    analytics = make()
    got: list[str | None] = []

    def broken(message: homing.PushMessage) -> None:
        raise RuntimeError("handler bug")

    analytics.on_push(broken)
    analytics.on_push(lambda message: got.append(message.message_id))
    gateway.send({"pinpoint.notification.title": "1"}, message_id="one")
    gateway.send({"pinpoint.notification.title": "2"}, message_id="two")
    analytics.push.start()
    wait_for(lambda: got == ["one", "two"] and len(gateway.acked) == 2)
    stats = analytics.push.stats()
    assert stats.handler_errors == 2 and "handler bug" in (stats.last_error or "")
    assert "a push handler failed" in caplog.text


def test_campaign_messages_record_received_and_opened_events(
    make: Callable[..., homing.Analytics], gateway: Gateway, tmp_path: Path
) -> None:
    analytics = make()
    got: list[homing.PushMessage] = []
    analytics.on_push(got.append)
    gateway.send({"pinpoint.notification.title": "Sale", **CAMPAIGN}, message_id="c1")
    gateway.send({"pinpoint.notification.title": "Plain"}, message_id="p1")
    analytics.push.start()
    wait_for(lambda: len(gateway.acked) == 2)
    analytics.push.foreground = False
    analytics.push.handle_payload({"pinpoint.notification.silentPush": "1", **CAMPAIGN},
                                  message_id="fcm-1")  # fmt: skip
    analytics.push.opened(got[0])
    kinds = [(e["EventType"], e.get("Attributes")) for e in stored_events(tmp_path / "sdk")]
    attributes = {"campaign_id": "camp-1", "campaign_activity_id": "act-1", "treatment_id": "0"}
    assert kinds == [
        ("_campaign.received_foreground", attributes),
        ("_campaign.received_background", attributes),
        ("_campaign.opened_notification", attributes),
    ]


def test_handle_payload_feeds_fcm_payloads_through_the_same_dedup(
    make: Callable[..., homing.Analytics],
) -> None:
    analytics = make()
    got: list[str | None] = []
    analytics.on_silent_push(lambda message: got.append(message.message_id))
    payload = {"pinpoint.notification.silentPush": "1", "refresh": "now"}
    first = analytics.push.handle_payload(payload, message_id="0:99%fcm")
    assert first is not None and first.silent
    assert analytics.push.handle_payload(payload, message_id="0:99%fcm") is None
    assert got == ["0:99%fcm"]
    with pytest.raises(ValueError):
        analytics.push.handle_payload("not a mapping")  # type: ignore[arg-type]


def test_it_reconnects_with_backoff_and_resumes_from_the_last_id(
    make: Callable[..., homing.Analytics], gateway: Gateway
) -> None:
    analytics = make()
    got: list[str | None] = []
    analytics.on_push(lambda message: got.append(message.message_id))
    gateway.status = 503
    analytics.push.start()
    wait_for(lambda: len(gateway.connections) >= 3)
    assert "503" in (analytics.push.stats().last_error or "")
    gateway.status = 200
    gateway.send({"pinpoint.notification.title": "x"}, message_id="after")
    wait_for(lambda: got == ["after"])
    gateway.drop_connections()  # the server goes away mid-stream
    gateway.send({"pinpoint.notification.title": "y"}, message_id="next")
    wait_for(lambda: got == ["after", "next"])
    resumed = [c.get("last-event-id") for c in gateway.connections if c.get("last-event-id")]
    assert resumed and resumed[0] == "1"


def test_the_backoff_grows_with_jitter_up_to_its_cap(tmp_path: Path) -> None:
    delays: list[float] = []
    stop = threading.Event()

    def record(event: threading.Event, seconds: float) -> None:
        delays.append(seconds)
        if len(delays) >= 12:
            push._stop.set()
            stop.set()

    push = Push(stream_url="http://127.0.0.1:9/stream", acks_url="http://127.0.0.1:9/acks",
                api_key="k", state={}, policy=coerce_policy("any"), record=lambda *a: None,
                wait=record)  # fmt: skip
    push.max_backoff = 4.0
    push.start()
    assert stop.wait(30)
    push.stop()
    assert all(0 <= d <= 4.0 for d in delays)
    assert max(delays[:2]) <= 1.0 and len(set(delays)) > 6  # small at first, and jittered
    assert push.stats().errors >= 12 and "ConnectError" in (push.stats().last_error or "")


def test_the_network_policy_keeps_it_offline(
    make: Callable[..., homing.Analytics], gateway: Gateway
) -> None:
    analytics = make(network_policy=lambda: False)
    analytics.push.start()
    time.sleep(0.3)
    assert gateway.connections == [] and analytics.push.running
    started = time.monotonic()
    analytics.push.stop()
    assert time.monotonic() - started < 1.0 and not analytics.push.running


def test_stop_and_close_are_bounded_while_connected(
    make: Callable[..., homing.Analytics], gateway: Gateway
) -> None:
    analytics = make(push=True)
    analytics.on_silent_push(lambda message: None)
    wait_for(lambda: analytics.push.stats().connected)
    thread = analytics.push._thread
    assert thread is not None
    started = time.monotonic()
    analytics.close()
    # The read blocked on the socket was woken: the thread ended, well before its timeout.
    assert time.monotonic() - started < 0.9
    assert not thread.is_alive() and not analytics.push.running
    assert analytics.push.stats().connects == 1


def test_an_unreadable_message_is_counted_and_acked(
    make: Callable[..., homing.Analytics], gateway: Gateway
) -> None:
    analytics = make()
    got: list[str | None] = []
    analytics.on_push(lambda message: got.append(message.message_id))
    gateway.messages.append((1, {"MessageId": "bad", "Silent": False, "Data": "oops"}))
    gateway.send({"pinpoint.notification.title": "fine"}, message_id="good")
    analytics.push.start()
    wait_for(lambda: got == ["good"] and sorted(gateway.acked) == ["bad", "good"])
    assert analytics.push.stats().errors >= 1


def test_push_true_waits_for_the_first_handler_before_connecting(
    make: Callable[..., homing.Analytics], gateway: Gateway
) -> None:
    gateway.send({"pinpoint.notification.title": "early"}, message_id="early")
    analytics = make(push=True)
    time.sleep(0.3)
    assert gateway.connections == [] and not analytics.push.running
    got: list[str | None] = []
    analytics.on_push(lambda message: got.append(message.message_id))
    wait_for(lambda: got == ["early"])
    # With a notifier, which shows every visible push, it connects at once.
    analytics.close()
    gateway.send({"pinpoint.notification.title": "shown"}, message_id="shown")
    shown: list[str | None] = []
    other = make(push=True, data_dir=analytics._store.path.parent.parent / "other",  # type: ignore[union-attr]
                 notifier=lambda message: shown.append(message.title))  # fmt: skip
    wait_for(lambda: shown == ["shown"])
    assert other.push.running


def test_the_stream_closes_when_the_policy_turns_to_no_and_reopens_after(
    make: Callable[..., homing.Analytics], gateway: Gateway
) -> None:
    online = [True]
    analytics = make(network_policy=lambda: online[0])
    analytics.push.policy_recheck = 0.1  # the heartbeat (0.2 s here) brings the check
    analytics.on_push(lambda message: None)
    analytics.push.start()
    wait_for(lambda: analytics.push.stats().connected)
    online[0] = False
    wait_for(lambda: not analytics.push.stats().connected)
    time.sleep(0.3)
    assert len(gateway.connections) == 1  # no reconnect while the policy says no
    online[0] = True
    wait_for(lambda: analytics.push.stats().connected)
    assert len(gateway.connections) == 2


def test_a_wrong_key_waits_long_and_logs_once(
    make: Callable[..., homing.Analytics], gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.status = 403
    analytics = make()
    analytics.push.max_backoff = 0.05
    analytics.push.start()
    wait_for(lambda: analytics.push.stats().errors == 1)
    time.sleep(0.3)
    assert len(gateway.connections) == 1  # waits minutes, not the backoff
    assert caplog.text.count("check the app id and the ingest key") == 1
    assert analytics.push.running


def test_a_title_with_a_unicode_line_separator_reaches_the_handler(
    make: Callable[..., homing.Analytics], gateway: Gateway
) -> None:
    # JSON may hold U+2028, U+2029 and U+0085 unescaped (orjson does); SSE ends lines at
    # CR and LF only, so they are part of the data line.
    analytics = make()
    got: list[homing.PushMessage] = []
    analytics.on_push(got.append)
    titles = ["line\u2028separator", "para\u2029graph", "next\x85line", "form\x0cfeed"]
    for number, title in enumerate(titles):
        gateway.send({"pinpoint.notification.title": title}, message_id=f"u{number}")
    analytics.push.start()
    wait_for(lambda: len(gateway.acked) == len(titles), timeout=5)
    assert [m.title for m in got] == titles
    assert analytics.push.stats().errors == 0


def test_the_stream_is_split_on_cr_lf_and_crlf_only_even_across_chunks() -> None:
    chunks = [b"a\r", b"\nb\rc\n", b"\xe2\x80", b"\xa8d\r", b"", b"\n", b"\r\n", b"e\n\n\r", b"\r"]
    assert list(_lines(chunks)) == ["a", "b", "c", "\u2028d", "", "e", "", "", ""]
    assert list(_lines([b"no end"])) == []  # an unfinished line is no line


def test_crlf_cut_between_two_writes_is_one_line_end(
    raw: Callable[..., tuple[RawServer, Push]],
) -> None:
    event = sse("1", "m1", {"pinpoint.notification.title": "a\u2028b"}, eol=b"\r\n")
    pieces = event.split(b"\n")  # every CR at the end of one write, its LF in the next
    pieces = [pieces[0]] + [b"\n" + piece for piece in pieces[1:]]
    server, push = raw(lambda headers: (200, "text/event-stream", pieces))
    got: list[homing.PushMessage] = []
    push.on_push(got.append)
    push.start()
    wait_for(lambda: server.acked == ["m1"], timeout=5)
    assert [m.title for m in got] == ["a\u2028b"]
    assert push.stats().errors == 0 and push._last_seq == 1


def test_an_id_that_is_no_sequence_number_leaves_the_cursor_and_the_message_is_handled(
    raw: Callable[..., tuple[RawServer, Push]],
) -> None:
    # str.isdigit() takes all of these; int() refuses the first two, and the others are
    # over 2**63-1, which the collector refuses as Last-Event-ID.
    odd = ["\u00b2", "9" * 5000, "99999999999999999999", str(2**63), "\u0661\u0662", "+5", " 6"]
    events = [sse(event_id, f"odd{n}", {"n": str(n)}) for n, event_id in enumerate(odd)]
    events += [sse(str(2**63 - 1), "max", {}), sse("7", "seven", {})]
    state: dict[str, Any] = {}
    server, push = raw(lambda headers: (200, "text/event-stream", events), state=state)
    got: list[str | None] = []
    push.on_push(lambda message: got.append(message.message_id))
    push.start()
    wait_for(lambda: len(set(server.acked)) == len(odd) + 2, timeout=5)
    assert got == [f"odd{n}" for n in range(len(odd))] + ["max", "seven"]
    assert push.stats().errors == 0 and push.stats().connects == 1
    assert state["cursor"]["last_seq"] == 2**63 - 1


def test_a_last_event_id_the_server_refuses_resets_the_cursor_once(
    raw: Callable[..., tuple[RawServer, Push]], caplog: pytest.LogCaptureFixture
) -> None:
    refused = _json.dumps({"Message": "Last-Event-ID: must be a whole number, the id (seq) "
                                       "of the last message the device handled"})  # fmt: skip
    events = [sse("3", "old", {}), sse("4", "new", {})]

    def answer(headers: dict[str, str]) -> Answer:
        if "last-event-id" in headers:
            return 400, "application/json", [refused]
        return 200, "text/event-stream", events

    state: dict[str, Any] = {"cursor": {"last_seq": 5, "seen": ["old"]}}
    server, push = raw(answer, state=state)
    got: list[str | None] = []
    push.on_push(lambda message: got.append(message.message_id))
    push.start()
    wait_for(lambda: sorted(server.acked) == ["new", "old"], timeout=5)
    assert got == ["new"]  # "old" was handled before the reset: the seen ids still know it
    assert [c.get("last-event-id") for c in server.connections[:2]] == ["5", None]
    assert state["cursor"]["last_seq"] == 4
    stats = push.stats()
    assert stats.errors == 1 and stats.duplicates == 1 and "400" in (stats.last_error or "")
    assert caplog.text.count("starting again from the first message") == 1


def test_a_cursor_over_2_63_saved_by_an_older_version_is_dropped_on_load(
    raw: Callable[..., tuple[RawServer, Push]],
) -> None:
    state: dict[str, Any] = {"cursor": {"last_seq": 99999999999999999999, "seen": ["a"]}}
    server, push = raw(lambda headers: (200, "text/event-stream", [sse("1", "b", {})]),
                       state=state)  # fmt: skip
    push.on_push(lambda message: None)
    push.start()
    wait_for(lambda: server.acked == ["b"], timeout=5)
    assert "last-event-id" not in server.connections[0]
    assert state["cursor"] == {"last_seq": 1, "seen": ["a", "b"]}


PORTAL = b"<html>\n<body>\n\n<p>Sign in to use the Wi-Fi</p>\n\n</body>\n</html>\n"


@pytest.mark.parametrize(
    ("content_type", "body", "healthy"),
    [
        ("text/html; charset=utf-8", PORTAL, False),  # a captive portal
        ("text/event-stream", b"", False),  # a proxy that closes at once
        ("text/event-stream", b"retry: 5000\n\n" + PORTAL, False),
        ("text/event-stream; charset=utf-8", b"retry: 5000\n\n: ping\n\n", True),
        ("text/event-stream", sse("1", "m", {}), True),
    ],
)
def test_a_server_that_answers_200_and_closes_at_once_gets_a_growing_backoff(
    raw: Callable[..., tuple[RawServer, Push]], content_type: str, body: bytes, healthy: bool
) -> None:
    delays: list[float] = []

    def record(stop: threading.Event, seconds: float) -> None:
        delays.append(seconds)  # no sleep: the test sees the delays, not waits them
        if len(delays) >= 10:
            stop.set()

    server, push = raw(lambda headers: (200, content_type, [body]), hold=0.0, wait=record)
    push.max_backoff = 8.0
    push.on_push(lambda message: None)
    push.start()
    wait_for(lambda: not push.running, timeout=10)
    assert len(delays) == 10 and len(server.connections) == 10
    stats = push.stats()
    if healthy:  # each connection worked: the backoff starts again from its smallest
        assert max(delays) <= 0.5 and stats.errors == 0
        return
    assert max(delays) > 0.5 and all(d <= 8.0 for d in delays)
    assert stats.errors == 10
    if "html" in content_type:
        assert stats.connects == 0 and "text/html" in (stats.last_error or "")
    else:
        assert "closed" in (stats.last_error or "")


def test_a_quiet_stream_that_stayed_open_long_enough_starts_the_backoff_again(
    raw: Callable[..., tuple[RawServer, Push]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Open, then silent until the read times out: an error, but the connection had been
    # good for longer than _STEADY (scaled down here), so the next one is soon.
    import homing._push

    monkeypatch.setattr(homing._push, "_STEADY", 0.2)
    monkeypatch.setattr(homing._push, "_READ_TIMEOUT", 0.4)
    delays: list[float] = []

    def record(stop: threading.Event, seconds: float) -> None:
        delays.append(seconds)
        if len(delays) >= 4:
            stop.set()

    _server, push = raw(lambda headers: (200, "text/event-stream", [b""]), hold=2.0, wait=record)
    push.max_backoff = 8.0
    push.on_push(lambda message: None)
    push.start()
    wait_for(lambda: not push.running, timeout=20)
    assert len(delays) == 4 and max(delays) <= 0.5, delays
    assert "ReadTimeout" in (push.stats().last_error or "")
