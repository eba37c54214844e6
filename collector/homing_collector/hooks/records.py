"""Events in Pinpoint's event-stream record format, and back.

The format is Pinpoint's (Amazon Pinpoint Developer Guide, "App event data stream"
event-streams-data-app and "Campaign event data stream" event-streams-data-campaign):

    {"event_type", "event_timestamp" (ms), "arrival_timestamp" (ms), "event_version",
     "application": {"app_id", "package_name", "title", "version_name", "version_code",
                     "sdk": {"name", "version"}},
     "client": {"client_id": <endpoint id>},
     "device": {"locale": {"code", "country", "language"}, "make", "model",
                "platform": {"name", "version"}},
     "session": {"session_id", "start_timestamp", "stop_timestamp"},
     "attributes": {...}, "metrics": {...}}

App events carry the endpoint as `endpoint`; `_campaign.*` events carry it as a JSON
string in `client_context.custom.endpoint`, as Pinpoint's campaign records do. Absent
values are left out, and `sdk`, `platform` and `session` stay as `{}` like Pinpoint's.
Homing adds `event_id`, the id the event was sent with, so that an import of its own
export stores nothing twice; records without one get an id made from their content.
Pinpoint's records have no session duration: an import computes `Duration` from the
start and stop.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from types import NoneType
from typing import Any, NamedTuple

import msgspec
import orjson

from homing.wire import (
    WireError,
    check_formatted_event,
    check_url_id,
    formatted_ms,
    parse_timestamp,
)

EVENT_VERSION = "3.1"  # the version of Pinpoint's current campaign and journey records
CAMPAIGN_EVENT_PREFIX = "_campaign."
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
_MAX_MS = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH) // _MS  # datetime's end

# (event field, application field) in Pinpoint's order.
_APPLICATION = (("AppPackageName", "package_name"), ("AppTitle", "title"))


def to_record(
    app_id: str,
    endpoint_id: str,
    event_id: str,
    event: Mapping[str, Any],
    endpoint: Mapping[str, Any] | None,
    arrival_ms: int,
) -> dict[str, Any]:
    """A stored event (its JSON as PutEvents got it) as an event-stream record."""
    return Records(app_id).make(endpoint_id, event_id, event, endpoint, arrival_ms)


class Records:
    """`to_record` for many events of one application, as an event stream's batch or an
    export makes them: what a record takes from its endpoint (its device, its app version,
    the endpoint itself) is made once per endpoint and shared by that endpoint's records,
    which must be serialised before the endpoint changes."""

    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        # endpoint id -> (the endpoint it was made from, its device, its app version)
        self._parts: dict[str, tuple[Mapping[str, Any] | None, dict[str, Any], Any]] = {}
        # (id, start, stop) -> the record's session: the events of a session share it,
        # and its timestamps are read once (bench/stream_records.py: about 12 us of CPU a
        # record without, 10.5 with).
        self._sessions: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        # What `line` splices: by endpoint id, the endpoint it was made from and its
        # encoded parts; by an event's application fields, and by session, their JSON.
        self._encoded: dict[str, tuple[Any, Any, bytes, bytes, bytes]] = {}
        self._applications: dict[tuple[Any, ...], bytes] = {}
        self._session_lines: dict[tuple[Any, Any, Any], bytes] = {}

    def make(
        self,
        endpoint_id: str,
        event_id: str,
        event: Mapping[str, Any],
        endpoint: Mapping[str, Any] | None,
        arrival_ms: int,
    ) -> dict[str, Any]:
        part = self._parts.get(endpoint_id)
        if part is None or part[0] is not endpoint:
            demographic = (endpoint or {}).get("Demographic") or {}
            part = self._parts[endpoint_id] = (
                endpoint, _device(demographic), demographic.get("AppVersion")
            )  # fmt: skip
        _, device, version_name = part
        get = event.get
        application: dict[str, Any] = {"app_id": self.app_id}
        for source, target in _APPLICATION:
            if get(source) is not None:
                application[target] = event[source]
        if version_name is not None:
            application["version_name"] = version_name
        if get("AppVersionCode") is not None:
            application["version_code"] = event["AppVersionCode"]
        sdk = {}
        if get("SdkName") is not None:
            sdk["name"] = event["SdkName"]
        if get("ClientSdkVersion") is not None:
            sdk["version"] = event["ClientSdkVersion"]
        application["sdk"] = sdk
        record: dict[str, Any] = {
            "event_type": event["EventType"],
            "event_timestamp": _ms(event["Timestamp"]),
            "arrival_timestamp": arrival_ms,
            "event_version": EVENT_VERSION,
            "application": application,
            "client": {"client_id": endpoint_id},
            "device": device,
            "session": self._session(get("Session")),
            "attributes": get("Attributes") or {},
            "metrics": get("Metrics") or {},
        }
        if endpoint is not None:
            if record["event_type"].startswith(CAMPAIGN_EVENT_PREFIX):
                text = orjson.dumps(endpoint).decode()
                record["client_context"] = {"custom": {"endpoint": text}}
            else:
                record["endpoint"] = endpoint
        record["event_id"] = event_id
        return record

    def line(
        self,
        endpoint_id: str,
        event_id: str,
        event: Mapping[str, Any],
        endpoint: Mapping[str, Any] | None,
        arrival_ms: int,
    ) -> bytes:
        """`make`'s record as its NDJSON line: the bytes of `orjson.dumps(record) + b"\\n"`,
        spliced from parts encoded once per endpoint, application and session rather than
        from a new dict each (bench/stream_records.py's batches, ISA-L's gzip included:
        7.6 us of CPU a record by `make` and orjson.dumps, 5.6 by `line`)."""
        part = self._encoded.get(endpoint_id)
        if part is None or part[0] is not endpoint:
            part = self._encoded[endpoint_id] = (
                endpoint,
                *_encoded_endpoint(endpoint_id, endpoint),
            )
        _, version_name, client_device, app_tail, campaign_tail = part
        get = event.get
        application = (
            get("AppPackageName"), get("AppTitle"), version_name, get("AppVersionCode"),
            get("SdkName"), get("ClientSdkVersion"),
        )  # fmt: skip
        try:
            encoded_application = self._applications.get(application)
        except TypeError:  # an unhashable value: not kept
            encoded_application = None
        if encoded_application is None:
            encoded_application = _encoded_application(self.app_id, application)
            with contextlib.suppress(TypeError):
                self._applications[application] = encoded_application
        event_type = event["EventType"]
        session = get("Session")
        return _LINE % (
            _dumps(event_type),
            _ms(event["Timestamp"]),
            arrival_ms,
            encoded_application,
            client_device,
            self._encoded_session(session) if session else b"{}",
            _dumps(get("Attributes") or {}),
            _dumps(get("Metrics") or {}),
            b"" if endpoint is None
            else campaign_tail if event_type.startswith(CAMPAIGN_EVENT_PREFIX)
            else app_tail,
            _dumps(event_id),
        )  # fmt: skip

    def stored_ndjson(
        self,
        rows: Iterable[tuple[int, str, str, int, bytes | str]],
        endpoints: Mapping[str, Mapping[str, Any] | None],
        failed: Callable[[str], None],
    ) -> bytes:
        """`line` of each stored event, joined, from its row (rowid, endpoint id, event id,
        arrival in ms, body) as the stream reads it, with its endpoint from `endpoints`. A
        row `line` cannot make is left out and its event id given to `failed`, in an
        except block.

        A body is orjson's JSON of the event, as every writer stores it: its attributes
        and metrics, already orjson's text of them, are spliced as they are, and only the
        fields a record takes apart are decoded (msgspec, into _Stored), not the whole
        event into dicts; the lines are written by msgspec in one call, from _Line's of
        those parts, rather than one `%` each (bench/stream_records.py, ISA-L's gzip
        included, on a loaded machine: 5.6 us of CPU a record by orjson.loads and `line`,
        4.4 by these parts spliced with `%`, 3.7 by _Line). What lies between a line's
        arrival and its attributes is one part, found by one look-up per record, and
        _Line has no field for each of its pieces (the same bench, alternated with the
        pieces apart: 4.7 us a record with them, 4.5 without). msgspec writes a string as
        orjson does (each code point was compared). A body with a newline, which orjson
        does not write, or one _Stored does not read, goes through `line`; one in another
        spelling of JSON (spaces, say) gives a line of the same JSON."""
        parts: dict[str, tuple[Any, ...]] = {}  # by endpoint id: its middles and parts
        applications: dict[tuple[Any, ...], bytes] = {}
        minutes = _MINUTES  # a minute's ms, or None if not in that form
        if len(minutes) > _MOST_MINUTES:
            minutes.clear()
        decode, new_line, middle_of = _decode_stored, _Line, self._middle
        prefix, empty = CAMPAIGN_EVENT_PREFIX, _EMPTY
        lines: list[Any] = []
        append = lines.append
        for _, endpoint_id, event_id, arrival_ms, body in rows:
            try:
                if type(body) is not bytes or body.find(10) >= 0:  # a newline: not orjson's
                    raise _NotOurs
                try:
                    # msgspec passes over what it does not decode without reading its
                    # UTF-8, which orjson.loads checks: `line` says what is not UTF-8.
                    if not body.isascii():
                        body.decode()
                    event = decode(body)  # an EventType that is not a string: an error
                except (UnicodeDecodeError, msgspec.DecodeError):
                    raise _NotOurs from None
                if type(event_id) is not str:
                    raise _NotOurs
                part = parts.get(endpoint_id)
                if part is None:
                    endpoint = endpoints.get(endpoint_id)
                    part = parts[endpoint_id] = ({}, *_endpoint_parts(endpoint_id, endpoint))
                # What a line holds from its event version to its session is the same
                # for the events of an endpoint that share their application's fields
                # and their session: made once a batch, and found by one look-up.
                key = (
                    event.AppPackageName, event.AppTitle, event.AppVersionCode, event.SdkName,
                    event.ClientSdkVersion, bytes(event.Session),
                )  # fmt: skip
                middles, _, _, app_tail, campaign_tail = part
                try:
                    middle = middles.get(key)
                except TypeError:  # an unhashable value: not kept
                    middle = None
                if middle is None:
                    middle = middle_of(applications, key, part)
                    with contextlib.suppress(TypeError):
                        middles[key] = middle
                event_type = event.EventType
                endpoint_text, context = (
                    campaign_tail if event_type.startswith(prefix) else app_tail
                )  # an endpoint's, or _NO_TAIL if it has none
                # _ms of format_timestamp's form: its minute read once, and its
                # seconds and milliseconds from tables (a KeyError or TypeError: _ms).
                timestamp = event.Timestamp
                try:
                    timestamp_ms = (
                        minutes[timestamp[:17]]
                        + _SECONDS_MS[timestamp[17:20]]
                        + _MILLIS_MS[timestamp[20:]]
                    )
                except (KeyError, TypeError):
                    timestamp_ms = _batch_ms(minutes, timestamp)
                # What is no longer than `false` is read as JSON, but orjson's {} is kept
                # as it is: a quarter of bench/stream_records.py's events have {} for
                # metrics, a seventh for attributes (alternated: about 0.3 us of CPU a
                # record less than reading them).
                attributes, metrics = event.Attributes, event.Metrics
                if len(attributes) <= _FALSY:
                    attributes = empty if attributes == empty else _values(attributes)
                if len(metrics) <= _FALSY:
                    metrics = empty if metrics == empty else _values(metrics)
                append(
                    new_line(
                        event_type,
                        timestamp_ms,
                        arrival_ms,
                        middle,
                        attributes,
                        metrics,
                        endpoint_text,
                        context,
                        event_id,
                    )
                )
            except _NotOurs:
                try:
                    endpoint = endpoints.get(endpoint_id)
                    line = self.line(
                        endpoint_id, event_id, orjson.loads(body), endpoint, arrival_ms
                    )
                except Exception:
                    failed(event_id)
                else:
                    append(msgspec.Raw(line[:-1]))
            except Exception:
                failed(event_id)
        try:
            return _encode_lines(lines)
        except Exception:  # not seen: each line alone, to leave out the one that fails
            encoded = []
            for item in lines:
                try:
                    encoded.append(_encode(item) + b"\n")
                except Exception:
                    failed(item.event_id)
            return b"".join(encoded)

    def _middle(
        self,
        applications: dict[tuple[Any, ...], bytes],
        key: tuple[Any, ...],
        part: tuple[Any, ...],
    ) -> msgspec.Raw:
        """stored_ndjson's part of a line from its event version to its session, for `key`
        (the event's application fields and session's JSON) and `part` (its endpoint's
        _endpoint_parts); the applications' JSON kept in `applications`."""
        package_name, title, version_code, sdk_name, sdk_version, session = key
        _, version_name, client_device, _, _ = part
        fields = (package_name, title, version_name, version_code, sdk_name, sdk_version)
        try:
            application = applications.get(fields)
        except TypeError:  # an unhashable value: not kept
            application = None
        if application is None:
            application = _encoded_application(self.app_id, fields)
            with contextlib.suppress(TypeError):
                applications[fields] = application
        found = orjson.loads(session) if session else None
        return msgspec.Raw(
            _VERSION_APPLICATION
            + application
            + client_device
            + (self._encoded_session(found) if found else b"{}")
        )

    def _encoded_session(self, session: Any) -> bytes:
        try:
            key = (session.get("Id"), session.get("StartTimestamp"), session.get("StopTimestamp"))
            found = self._session_lines.get(key)
        except (AttributeError, TypeError):
            return _dumps(_session(session))
        if found is None:
            found = self._session_lines[key] = _dumps(self._session(session))
        return found

    def _session(self, session: Any) -> dict[str, Any]:
        if not session:
            return {}
        key = (session.get("Id"), session.get("StartTimestamp"), session.get("StopTimestamp"))
        if not (type(key[0]) is str and type(key[1]) is str and type(key[2]) in (str, NoneType)):
            return _session(session)
        found = self._sessions.get(key)
        if found is None:
            found = self._sessions[key] = _session(session)
        return found


_dumps = orjson.dumps
_LINE = (
    b'{"event_type":%s,"event_timestamp":%d,"arrival_timestamp":%d,"event_version":"'
    + EVENT_VERSION.encode()
    + b'","application":%s,%s,"session":%s,"attributes":%s,"metrics":%s%s,"event_id":%s}\n'
)


class _Stored(msgspec.Struct, gc=False):
    """What `line` takes of a stored event; its attributes and metrics as their JSON."""

    EventType: str
    Timestamp: Any
    Session: msgspec.Raw = msgspec.Raw(b"")
    Attributes: msgspec.Raw = msgspec.Raw(b"")
    Metrics: msgspec.Raw = msgspec.Raw(b"")
    AppPackageName: Any = None
    AppTitle: Any = None
    AppVersionCode: Any = None
    SdkName: Any = None
    ClientSdkVersion: Any = None


_decode_stored = msgspec.json.Decoder(_Stored).decode
# The longest JSON that is falsy to Python: `false`. What is longer is spliced as it is.
_FALSY = 5


# A minute of format_timestamp's form ("2017-02-24T22:03:") -> its ms (None if it is not
# one), kept from batch to batch: a stream's batches mostly share their minutes, each read
# by formatted_ms once rather than once a batch (about 60 a batch of the bench's events,
# spread over an hour: 4% of the stream's process's GIL samples).
_MINUTES: dict[str, Any] = {}
_MOST_MINUTES = 10_000

# format_timestamp's seconds ("41.") and milliseconds ("123Z"), in ms.
_SECONDS_MS = {f"{second:02d}.": 1000 * second for second in range(60)}
_MILLIS_MS = {f"{millis:03d}Z": millis for millis in range(1000)}


def _batch_ms(minutes: dict[str, Any], timestamp: Any) -> int:
    """_ms, noting the timestamp's minute (its first 17 characters) in `minutes` as
    formatted_ms reads it: a timestamp of format_timestamp's form is that minute's ms
    plus its seconds' and milliseconds'."""
    if type(timestamp) is str and timestamp[:17] not in minutes:
        minutes[timestamp[:17]] = formatted_ms(timestamp[:17] + "00.000Z")
    return _ms(timestamp)


class _NotOurs(Exception):
    """A body that stored_ndjson does not read: `line` makes its record."""


def _values(text: msgspec.Raw) -> msgspec.Raw:
    """`line`'s attributes or metrics, from their JSON (empty if absent): {} if falsy."""
    if not text:
        return _EMPTY
    return msgspec.Raw(_dumps(orjson.loads(bytes(text)) or {}))


class _Line(msgspec.Struct, gc=False):
    """A line of stored_ndjson: `line`'s fields, in its order; what is UNSET is left out.
    `event_version` is the JSON of the version and of the fields after it up to the
    session's (stored_ndjson's middle part, which starts with the version's value). Never
    in a cycle: not tracked by the GC."""

    event_type: str
    event_timestamp: int
    arrival_timestamp: int
    event_version: msgspec.Raw
    attributes: msgspec.Raw
    metrics: msgspec.Raw
    endpoint: Any = msgspec.UNSET
    client_context: Any = msgspec.UNSET
    event_id: Any = msgspec.UNSET


# The middle part's start: the event version's value, and the application's key.
_VERSION_APPLICATION = b'"' + EVENT_VERSION.encode() + b'","application":'
_encoder = msgspec.json.Encoder()
_encode, _encode_lines = _encoder.encode, _encoder.encode_lines
_EMPTY = msgspec.Raw(b"{}")
_NO_TAIL = (msgspec.UNSET, msgspec.UNSET)  # an event without its endpoint


def _endpoint_parts(endpoint_id: str, endpoint: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """_encoded_endpoint's parts as stored_ndjson takes them: the app version, the JSON
    between a line's application and its session (`,"client":...,"session":`), and
    (endpoint, client_context) for an app event and a campaign event, as _Line's."""
    demographic = (endpoint or {}).get("Demographic") or {}
    client_device = b',"client":{"client_id":%s},"device":%s,"session":' % (
        _dumps(endpoint_id),
        _dumps(_device(demographic)),
    )
    if endpoint is None:
        return demographic.get("AppVersion"), client_device, _NO_TAIL, _NO_TAIL
    text = _dumps(endpoint)
    context = msgspec.Raw(b'{"custom":{"endpoint":%s}}' % _dumps(text.decode()))
    app = (msgspec.Raw(text), msgspec.UNSET)
    return demographic.get("AppVersion"), client_device, app, (msgspec.UNSET, context)


def _encoded_endpoint(
    endpoint_id: str, endpoint: Mapping[str, Any] | None
) -> tuple[Any, bytes, bytes, bytes]:
    """An endpoint's part of `line`: its app version, `"client":...,"device":...`, and
    how an app event and a campaign event carry the endpoint."""
    demographic = (endpoint or {}).get("Demographic") or {}
    client_device = b'"client":{"client_id":%s},"device":%s' % (
        _dumps(endpoint_id),
        _dumps(_device(demographic)),
    )
    if endpoint is None:
        return demographic.get("AppVersion"), client_device, b"", b""
    text = _dumps(endpoint)
    campaign = b',"client_context":{"custom":{"endpoint":%s}}' % _dumps(text.decode())
    return demographic.get("AppVersion"), client_device, b',"endpoint":' + text, campaign


def _encoded_application(app_id: str, fields: tuple[Any, ...]) -> bytes:
    """`make`'s application object for (package name, title, version name, version code,
    SDK name, SDK version), as JSON."""
    package_name, title, version_name, version_code, sdk_name, sdk_version = fields
    application: dict[str, Any] = {"app_id": app_id}
    if package_name is not None:
        application["package_name"] = package_name
    if title is not None:
        application["title"] = title
    if version_name is not None:
        application["version_name"] = version_name
    if version_code is not None:
        application["version_code"] = version_code
    sdk = {}
    if sdk_name is not None:
        sdk["name"] = sdk_name
    if sdk_version is not None:
        sdk["version"] = sdk_version
    application["sdk"] = sdk
    return _dumps(application)


def _device(demographic: Mapping[str, Any]) -> dict[str, Any]:
    device: dict[str, Any] = {}
    if demographic.get("Locale"):
        device["locale"] = _locale(demographic["Locale"])
    for source, target in (("Make", "make"), ("Model", "model")):
        if demographic.get(source) is not None:
            device[target] = demographic[source]
    platform = {}
    if demographic.get("Platform") is not None:
        platform["name"] = demographic["Platform"]
    if demographic.get("PlatformVersion") is not None:
        platform["version"] = demographic["PlatformVersion"]
    device["platform"] = platform
    return device


class Imported(NamedTuple):
    """A record read back: what PutEvents would have been sent."""

    endpoint_id: str
    event_id: str
    event: dict[str, Any]
    endpoint: dict[str, Any] | None  # the endpoint as the record carried it, if it did


def from_record(record: Any) -> Imported:
    """An event-stream record as an event; WireError names the field and the rule."""
    if type(record) is not dict:
        raise WireError("record", f"must be a JSON object, not {type(record).__name__}")
    client = _object(record, "client")
    endpoint_id = check_url_id(client.get("client_id"), "client.client_id")
    timestamp = _check_ms(record.get("event_timestamp"), "event_timestamp")
    event: dict[str, Any] = {
        "EventType": record.get("event_type"),
        "Timestamp": _iso(timestamp),
    }
    application = _object(record, "application")
    for target, source in _APPLICATION:
        if application.get(source) is not None:
            event[target] = application[source]
    if application.get("version_code") is not None:
        event["AppVersionCode"] = application["version_code"]
    sdk = _object(application, "sdk", "application.sdk")
    if sdk.get("name") is not None:
        event["SdkName"] = sdk["name"]
    if sdk.get("version") is not None:
        event["ClientSdkVersion"] = sdk["version"]
    session = _object(record, "session")
    if session:
        event["Session"] = _event_session(session)
    for source, target in (("attributes", "Attributes"), ("metrics", "Metrics")):
        values = _object(record, source)
        if values:
            event[target] = values
    # The collector's own rule for an event, so an import refuses what PutEvents would;
    # its times are _iso's text of numbers checked above, not parsed back.
    check_formatted_event(event)

    event_id = record.get("event_id")
    if event_id is None:
        event_id = content_id(record)
    check_url_id(event_id, "event_id")
    return Imported(endpoint_id, event_id, event, _endpoint(record, application))


def content_id(record: Mapping[str, Any]) -> str:
    """An event id made from a record's content: the same record gets the same id, so a
    record Firehose delivered twice, or an archive imported twice, is stored once."""
    digest = hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return digest[:32]


def _endpoint(record: dict[str, Any], application: dict[str, Any]) -> dict[str, Any] | None:
    endpoint = record.get("endpoint")
    if endpoint is not None:
        if type(endpoint) is not dict:
            raise WireError("endpoint", "must be an object")
        return endpoint
    custom = _object(_object(record, "client_context"), "custom", "client_context.custom")
    if custom.get("endpoint") is not None:
        try:
            parsed = orjson.loads(custom["endpoint"])
        except (orjson.JSONDecodeError, TypeError):
            parsed = None
        if type(parsed) is not dict:
            raise WireError("client_context.custom.endpoint", "must be an endpoint as JSON")
        return parsed
    # No endpoint in the record: what its device and application say of it.
    device = _object(record, "device")
    demographic: dict[str, Any] = {}
    locale = _object(device, "locale", "device.locale")
    if locale.get("code") is not None:
        demographic["Locale"] = locale["code"]
    for source, target in (("make", "Make"), ("model", "Model")):
        if device.get(source) is not None:
            demographic[target] = device[source]
    platform = _object(device, "platform", "device.platform")
    if platform.get("name") is not None:
        demographic["Platform"] = platform["name"]
    if platform.get("version") is not None:
        demographic["PlatformVersion"] = platform["version"]
    if application.get("version_name") is not None:
        demographic["AppVersion"] = application["version_name"]
    return {"Demographic": demographic} if demographic else None


def _object(parent: Mapping[str, Any], key: str, field: str | None = None) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if type(value) is not dict:
        raise WireError(field or key, f"must be an object, not {type(value).__name__}")
    return value


def _session(session: Mapping[str, Any] | None) -> dict[str, Any]:
    if not session:
        return {}
    result = {"session_id": session["Id"], "start_timestamp": _ms(session["StartTimestamp"])}
    if session.get("StopTimestamp") is not None:
        result["stop_timestamp"] = _ms(session["StopTimestamp"])
    return result


def _event_session(session: dict[str, Any]) -> dict[str, Any]:
    start = _check_ms(session.get("start_timestamp"), "session.start_timestamp")
    result: dict[str, Any] = {"Id": session.get("session_id"), "StartTimestamp": _iso(start)}
    if session.get("stop_timestamp") is not None:
        stop = _check_ms(session["stop_timestamp"], "session.stop_timestamp")
        if stop < start:
            raise WireError("session.stop_timestamp", "must not be before start_timestamp")
        result["StopTimestamp"] = _iso(stop)
        result["Duration"] = stop - start
    return result


def _locale(code: str) -> dict[str, str]:
    # "en_US" (Pinpoint's form) or "en-US": the language, then the country.
    language, _, country = code.replace("-", "_").partition("_")
    locale = {"code": code}
    if country:
        locale["country"] = country
    if language:
        locale["language"] = language
    return locale


def _ms(timestamp: str) -> int:
    # A stored event's Timestamp passed check_event; most are in format_timestamp's form.
    ms = formatted_ms(timestamp)
    return (parse_timestamp(timestamp) - _EPOCH) // _MS if ms is None else ms


def _check_ms(value: object, field: str) -> int:
    if type(value) is not int or not 0 <= value < _MAX_MS:
        raise WireError(field, "must be a whole number of milliseconds since 1970")
    return value


def _iso(ms: int) -> str:
    # format_timestamp's form, from whole minutes, seconds and milliseconds apart: ms / 1000
    # as a float can land a millisecond short. Archives run in time order, so a minute's
    # text serves many events and their sessions' starts, and the rest comes from two
    # tables: no strftime, nor int formatting, for most events.
    minute, rest = divmod(ms, 60_000)
    second, millis = divmod(rest, 1000)
    return _minute(minute) + _SECONDS[second] + _MILLIS[millis]


_SECONDS = tuple(f"{second:02d}." for second in range(60))
_MILLIS = tuple(f"{millis:03d}Z" for millis in range(1000))


@functools.lru_cache(maxsize=1024)
def _minute(minute: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
