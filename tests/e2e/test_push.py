"""Push end to end: boto3 sends, a live collector streams, SDK devices in other processes.

Each device is a child process running `homing.Analytics(..., push)`; its handlers
write one JSON line per message to stdout, and it takes commands on stdin.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import App, LiveCollector
from tests.e2e.conftest import CHILD_PRELUDE, ROOT, free_port, spawn

DEVICE = """
import json, os, sys, threading, time
import httpx

app_id, url, token, data_dir = sys.argv[1:5]
setup = json.loads(sys.argv[5])


class Lossy(httpx.HTTPTransport):
    # Loses the first acks and forgets Last-Event-ID, as a flaky network and a lost
    # state would: the collector must then send the messages again.
    lose_acks = setup.get("lose_acks", 0)

    def handle_request(self, request):
        if request.url.path.endswith("/stream/acks") and Lossy.lose_acks > 0:
            Lossy.lose_acks -= 1
            raise httpx.ConnectError("ack lost on purpose")
        if request.url.path.endswith("/stream") and setup.get("lose_acks"):
            request.headers.pop("last-event-id", None)
        return super().handle_request(request)


analytics = homing.Analytics(app_id, url, token, data_dir=data_dir, flush_interval=3600,
                             transport=Lossy())
analytics.push.max_backoff = 0.5


_printing = threading.Lock()


def emit(line):
    # The push thread and the main thread both write: print() writes the text and its
    # newline apart, so two unguarded lines can run together into one.
    with _printing:
        sys.stdout.write(json.dumps(line) + "\\n")
        sys.stdout.flush()


def out(kind, message):
    emit({"kind": kind, "id": message.message_id, "title": message.title,
          "body": message.body, "data": message.data, "campaign": message.campaign})


analytics.on_push(lambda message: out("push", message))
analytics.on_silent_push(lambda message: out("silent", message))
if setup.get("user"):
    analytics.identify(setup["user"])
if setup.get("update"):
    analytics.update_endpoint(**setup["update"])
result = analytics.flush(timeout=10)
assert result.error is None, result
analytics.push.start()
deadline = time.monotonic() + 20
while not analytics.push.stats().connected and time.monotonic() < deadline:
    time.sleep(0.01)
emit({"kind": "ready", "endpoint": analytics.endpoint_id})
for line in sys.stdin:
    command = line.strip()
    if command == "reconnect":
        analytics.push.stop()
        analytics.push.start()
    elif command == "stats":
        stats = analytics.push.stats()
        emit({"kind": "stats", "duplicates": stats.duplicates,
              "received": stats.received, "connects": stats.connects})
    elif command.startswith("record "):
        analytics.record_event(**json.loads(command[7:]))
        result = analytics.flush(timeout=10)
        emit({"kind": "recorded", "sent": result.sent, "error": result.error})
    elif command.startswith("feed "):
        message = analytics.push.handle_payload(json.loads(command[5:]))
        emit({"kind": "fed", "dispatched": message is not None})
analytics.close()
"""


class Device:
    """One SDK instance in a child process."""

    def __init__(self, collector: LiveCollector, app: App, data_dir: Path, **setup: Any) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []  # every line, in order
        self.unread: list[dict[str, Any]] = []  # lines no expect() or quiet() took
        self.log = data_dir.with_suffix(".log")
        with self.log.open("a") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(DEVICE), app.id,
                 collector.url, app.ingest.token, str(data_dir), json.dumps(setup)],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                text=True,
            )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.endpoint_id = str(self.expect("ready")["endpoint"])
        except BaseException:
            self.stop()  # no fixture knows of this device yet
            raise

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:  # shown in the failure, rather than ending the reader
                self.lines.put({"kind": "garbled", "text": line})

    def expect(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        """The next line of this kind that no expect() took yet, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for index, line in enumerate(self.unread):
                if line["kind"] == kind:
                    return self.unread.pop(index)
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"no {kind!r} line; seen {self.seen}\n{self.log.read_text()[-3000:]}"
                ) from None
            self.seen.append(line)
            self.unread.append(line)

    def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Every line not taken yet, and those printed within `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            self.unread.append(line)
        got, self.unread = self.unread, []
        return got

    def command(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # it had ended already
                self.process.stdin.close()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[Callable[..., Device]]:
    started: list[Device] = []

    def start(collector: LiveCollector, app: App, name: str, **setup: Any) -> Device:
        device = Device(collector, app, tmp_path / name, **setup)
        started.append(device)
        return device

    yield start
    for device in started:
        device.stop()


def visible(title: str, **extra: Any) -> dict[str, Any]:
    return {"DefaultPushNotificationMessage": {"Title": title, "Body": f"{title} body", **extra}}


def send(client: Any, app: App, endpoint_ids: list[str], config: dict[str, Any],
         **request: Any) -> dict[str, Any]:  # fmt: skip
    answer = client.send_messages(
        ApplicationId=app.id,
        MessageRequest={"Endpoints": {e: {} for e in endpoint_ids},
                        "MessageConfiguration": config, **request},
    )  # fmt: skip
    results: dict[str, Any] = answer["MessageResponse"]["EndpointResult"]
    return results


def test_send_users_messages_reaches_both_devices_of_a_user(
    collector: LiveCollector, devices: Callable[..., Device]
) -> None:
    app = collector.create_app("push-users")
    phone = devices(collector, app, "phone", user="alice")
    laptop = devices(collector, app, "laptop", user="alice")
    other = devices(collector, app, "other", user="bob")
    admin = collector.client(app.admin)
    answer = admin.send_users_messages(
        ApplicationId=app.id,
        SendUsersMessageRequest={
            "MessageConfiguration": visible("Hello Alice", Data={"order": "42"}),
            "Context": {"campaign_id": "camp-7", "treatment_id": "0"},
            "Users": {"alice": {}},
        },
    )
    results = answer["SendUsersMessageResponse"]["Result"]["alice"]
    assert set(results) == {phone.endpoint_id, laptop.endpoint_id}
    assert {r["DeliveryStatus"] for r in results.values()} == {"SUCCESSFUL"}
    for device in (phone, laptop):
        got = device.expect("push")
        assert (got["title"], got["body"], got["data"]) == (
            "Hello Alice", "Hello Alice body", {"order": "42"}
        )  # fmt: skip
        assert got["campaign"] == {"campaign_id": "camp-7", "treatment_id": "0"}
        assert got["id"] == results[device.endpoint_id]["MessageId"]
    assert [line["kind"] for line in other.quiet(0.5)] == []


def test_an_offline_device_gets_its_message_on_reconnect_within_the_ttl_only(
    collector: LiveCollector, devices: Callable[..., Device]
) -> None:
    app = collector.create_app("push-offline")
    device = devices(collector, app, "sleepy")
    endpoint_id = device.endpoint_id
    device.stop()
    admin = collector.client(app.admin)
    # The short-lived one goes first: the stream sends oldest first, so had it survived
    # its TTL it would arrive before the other one.
    short = send(admin, app, [endpoint_id], {**visible("Expired"),
                                             "GCMMessage": {"TimeToLive": 1}})  # fmt: skip
    long = send(admin, app, [endpoint_id], {**visible("Kept"),
                                            "GCMMessage": {"TimeToLive": 600}})  # fmt: skip
    assert short[endpoint_id]["DeliveryStatus"] == "TEMPORARY_FAILURE"
    assert long[endpoint_id]["StatusCode"] == 202
    time.sleep(2.2)
    again = devices(collector, app, "sleepy")
    assert again.endpoint_id == endpoint_id
    got = again.expect("push")
    assert (got["title"], got["id"]) == ("Kept", long[endpoint_id]["MessageId"])
    assert [line["kind"] for line in again.quiet(0.5)] == []


def test_a_message_sent_again_is_dispatched_once(
    collector: LiveCollector, devices: Callable[..., Device]
) -> None:
    app = collector.create_app("push-twice")
    # The device loses its first ack and sends no Last-Event-ID: the collector must
    # send the message again when the device reconnects.
    device = devices(collector, app, "flaky", lose_acks=1)
    admin = collector.client(app.admin)
    result = send(admin, app, [device.endpoint_id], visible("Only once"))
    assert device.expect("push")["title"] == "Only once"
    device.command("reconnect")
    deadline = time.monotonic() + 20
    while True:
        device.command("stats")
        stats = device.expect("stats")
        if stats["duplicates"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (stats["received"], stats["duplicates"]) == (1, 1)
    # The same message through the app's own push library (FCM) is recognised too.
    payload = {"MessageId": result[device.endpoint_id]["MessageId"], "Silent": False,
               "Data": {"pinpoint.notification.title": "Only once"}}  # fmt: skip
    device.command("feed " + json.dumps(payload))
    assert device.expect("fed")["dispatched"] is False
    # Acknowledged at last: a third connection gets nothing.
    device.command("reconnect")
    assert [line["kind"] for line in device.quiet(0.7)] == []
    assert [line["kind"] for line in device.seen].count("push") == 1


def test_a_silent_push_reaches_the_silent_handler_only(
    collector: LiveCollector, devices: Callable[..., Device]
) -> None:
    app = collector.create_app("push-silent")
    device = devices(collector, app, "quiet")
    admin = collector.client(app.admin)
    config = {"DefaultPushNotificationMessage": {"SilentPush": True,
                                                 "Data": {"refresh": "catalog"}}}  # fmt: skip
    result = send(admin, app, [device.endpoint_id], config)
    got = device.expect("silent")
    assert (got["data"], got["id"]) == (
        {"refresh": "catalog"}, result[device.endpoint_id]["MessageId"]
    )  # fmt: skip
    assert [line["kind"] for line in device.quiet(0.5)] == []
    assert "push" not in [line["kind"] for line in device.seen]


def test_an_opted_out_endpoint_gets_opt_out_for_a_visible_push(
    collector: LiveCollector, devices: Callable[..., Device]
) -> None:
    app = collector.create_app("push-optout")
    device = devices(collector, app, "optout", update={"opt_out": True})
    admin = collector.client(app.admin)
    result = send(admin, app, [device.endpoint_id], visible("Not for you"))
    assert result[device.endpoint_id]["DeliveryStatus"] == "OPT_OUT"
    assert result[device.endpoint_id]["StatusCode"] == 403
    silent = send(admin, app, [device.endpoint_id],
                  {"DefaultPushNotificationMessage": {"SilentPush": True,
                                                      "Data": {"k": "v"}}})  # fmt: skip
    assert silent[device.endpoint_id]["DeliveryStatus"] == "SUCCESSFUL"
    assert device.expect("silent")["data"] == {"k": "v"}
    assert "push" not in [line["kind"] for line in device.seen + device.quiet(0.3)]


def test_killing_the_collector_mid_stream_loses_no_acknowledged_message(
    start_collector: Callable[..., LiveCollector], devices: Callable[..., Device],
    tmp_path: Path,
) -> None:  # fmt: skip
    port = str(free_port())
    live = start_collector(tmp_path / "push.db", "--port", port)
    app = live.create_app("push-crash")
    device = devices(live, app, "survivor")
    admin = live.client(app.admin)
    sent: dict[str, str] = {}
    for i in range(3):
        result = send(admin, app, [device.endpoint_id], visible(f"before {i}"))
        sent[result[device.endpoint_id]["MessageId"]] = f"before {i}"
    live.stop(signal.SIGKILL)
    live.start()  # same database, same port: the device reconnects by itself
    admin = live.client(app.admin)
    for i in range(3):
        result = send(admin, app, [device.endpoint_id], visible(f"after {i}"))
        assert result[device.endpoint_id]["StatusCode"] in (200, 202)
        sent[result[device.endpoint_id]["MessageId"]] = f"after {i}"
    got = {}
    while len(got) < len(sent):
        line = device.expect("push", timeout=30)
        assert line["id"] not in got, f"{line['id']} dispatched twice"
        got[line["id"]] = line["title"]
    assert got == sent
    assert [line["kind"] for line in device.quiet(0.5)] == []
    device.command("stats")
    assert device.expect("stats")["connects"] >= 2  # it did lose the stream and come back


def test_the_endpoint_profile_survives_an_sdk_restart_and_merges(
    collector: LiveCollector, devices: Callable[..., Device]
) -> None:
    app = collector.create_app("push-profile")
    first = devices(collector, app, "profile", user="carol",
                    update={"attributes": {"plan": "pro", "tags": ["a", "b"]},
                            "location": {"Country": "FR"}, "metrics": {"visits": 1}})  # fmt: skip
    first.stop()
    second = devices(collector, app, "profile",
                     update={"attributes": {"tags": ["c"]}, "metrics": {"level": 3}})  # fmt: skip
    assert second.endpoint_id == first.endpoint_id
    admin = collector.client(app.admin)
    endpoint = admin.get_endpoint(ApplicationId=app.id, EndpointId=second.endpoint_id)[
        "EndpointResponse"
    ]
    assert endpoint["Attributes"] == {"plan": ["pro"], "tags": ["c"]}
    assert endpoint["Metrics"] == {"visits": 1.0, "level": 3.0}
    assert endpoint["Location"]["Country"] == "FR"
    assert endpoint["User"]["UserId"] == "carol"
    assert endpoint["ChannelType"] == "CUSTOM"
    assert endpoint["Demographic"]["Platform"]
    users = admin.get_user_endpoints(ApplicationId=app.id, UserId="carol")
    assert [e["Id"] for e in users["EndpointsResponse"]["Item"]] == [second.endpoint_id]
    assert os.path.exists(Path(str(second.log).removesuffix(".log")) / "state.sqlite3")


def test_the_push_listener_sample_prints_what_it_receives(
    collector: LiveCollector, tmp_path: Path
) -> None:
    app = collector.create_app("push-sample")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMING_")}
    env.update({"HOMING_URL": collector.url, "HOMING_APP_ID": app.id,
                "HOMING_INGEST_TOKEN": app.ingest.token, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    listener = subprocess.Popen(
        [sys.executable, str(ROOT / "samples" / "push_listener.py"), "--user", "dana",
         "--count", "2", "--seconds", "60", "--data-dir", str(tmp_path / "listener")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert listener.stdout is not None
        first = listener.stdout.readline()
        assert first.startswith("listening as endpoint "), first + listener.stderr.read()
        admin = collector.client(app.admin)
        for config in (
            visible("Hello Dana"),
            {"DefaultPushNotificationMessage": {"SilentPush": True, "Data": {"b": "2", "a": "1"}}},
        ):
            admin.send_users_messages(
                ApplicationId=app.id,
                SendUsersMessageRequest={"MessageConfiguration": config, "Users": {"dana": {}}},
            )  # fmt: skip
        out, err = listener.communicate(timeout=60)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()
    assert listener.returncode == 0, err
    assert out.splitlines() == ["push: Hello Dana | Hello Dana body", "silent: a=1, b=2",
                                "received 2 pushes"]  # fmt: skip


# Another process that holds only what every copy of the app holds, the ingest key, and
# has learnt a device's endpoint id: it tries the device's stream, its acks, a credential
# of its own, and moving the device's pushes to an address of its own.
STRANGER = """
import json, sys
import httpx

url, app_id, endpoint_id, token, message_id = sys.argv[1:6]
endpoint = f"{url}/v1/apps/{app_id}/endpoints/{endpoint_id}"
headers = {"Authorization": f"Bearer {token}"}
with httpx.stream("GET", f"{endpoint}/stream", headers=headers, timeout=10) as stream:
    stream.read()
    answers = {"stream": [stream.status_code, stream.json()["Message"]]}
acks = httpx.post(f"{endpoint}/stream/acks", json={"MessageIds": [message_id]}, headers=headers)
answers["acks"] = [acks.status_code, acks.json()["Message"]]
claim = httpx.post(f"{endpoint}/credential", headers=headers)
answers["claim"] = [claim.status_code, claim.json()["Message"]]
move = httpx.put(endpoint, json={"Address": "stranger"}, headers=headers)
answers["move"] = [move.status_code, move.json()["Message"]]
print(json.dumps(answers), flush=True)
"""


def test_a_device_credential_keeps_other_holders_of_the_ingest_key_out(
    collector: LiveCollector, devices: Callable[..., Device]
) -> None:
    app = collector.create_app("push-credential")
    device = devices(collector, app, "owner", update={"address": "owner-address"})
    admin = collector.client(app.admin)
    first = send(admin, app, [device.endpoint_id], visible("Before"))
    assert device.expect("push")["id"] == first[device.endpoint_id]["MessageId"]

    stranger = spawn(STRANGER, collector.url, app.id, device.endpoint_id, app.ingest.token,
                     first[device.endpoint_id]["MessageId"])  # fmt: skip
    out, err = stranger.communicate(timeout=60)
    assert stranger.returncode == 0, err
    answers = json.loads(out)
    for name in ("stream", "acks"):
        status, message = answers[name]
        assert status == 403 and "X-Homing-Device-Credential" in message, answers
    assert answers["claim"][0] == 409, answers
    assert answers["move"][0] == 403 and answers["move"][1].startswith("Address: "), answers
    stored = admin.get_endpoint(ApplicationId=app.id, EndpointId=device.endpoint_id)
    assert stored["EndpointResponse"]["Address"] == "owner-address"

    # The device's own stream was not disturbed, and still delivers.
    second = send(admin, app, [device.endpoint_id], visible("After"))
    got = device.expect("push")
    assert (got["id"], got["title"]) == (second[device.endpoint_id]["MessageId"], "After")
    device.command("stats")
    assert device.expect("stats")["connects"] == 1


def test_a_device_asks_again_after_its_credential_is_revoked(
    collector: LiveCollector, devices: Callable[..., Device]
) -> None:
    import httpx

    app = collector.create_app("push-reissue")
    device = devices(collector, app, "revoked")
    url = f"{collector.url}/v1/apps/{app.id}/endpoints/{device.endpoint_id}/credential"

    def issued() -> str | None:
        rows = collector.query(
            "SELECT created_at || secret_sha256 FROM device_credentials"
            " WHERE app_id = ? AND endpoint_id = ?",
            app.id,
            device.endpoint_id,
        )
        return None if not rows else str(rows[0][0])

    first = issued()
    assert first is not None  # the device asked before its first stream
    revoked = httpx.delete(url, headers={"Authorization": f"Bearer {app.admin.token}"})
    assert revoked.status_code == 200  # and its stream ends
    # The device reconnects with the credential the collector no longer has, is told so,
    # asks for a new one, and is back on its stream.
    deadline = time.monotonic() + 20
    while issued() in (None, first):
        assert time.monotonic() < deadline, "the device did not ask for a new credential"
        time.sleep(0.1)
    admin = collector.client(app.admin)
    sent = send(admin, app, [device.endpoint_id], visible("Again"))
    assert device.expect("push")["id"] == sent[device.endpoint_id]["MessageId"]
