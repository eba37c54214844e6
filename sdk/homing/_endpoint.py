"""The endpoint: a stable id for this installation and its profile.

The profile is what the device tells (`Demographic`, probed at start) under what the app
set (`update_endpoint`), persisted in the state file. Updates merge as the collector
merges them: a given attribute, metric or demographic field replaces that one, one set
to None or [] is removed, and the rest are kept. Each update bumps a version; the
uploader sends the current profile and marks that version sent, so updates made offline
coalesce into one UpdateEndpoint.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Mapping, MutableMapping
from typing import Any

from homing import _json
from homing._device import Probe, demographic
from homing._exceptions import InvalidEndpointError
from homing.wire import (
    DEMOGRAPHIC_FIELDS,
    WireError,
    check_endpoint,
    check_endpoint_size,
    check_id,
    format_timestamp,
    merge_map,
    new_endpoint,
)

logger = logging.getLogger("homing")

_ID_KEY = "endpoint_id"
# {"version": int, "changed": float, "fields": {...}, "cleared": {"Attributes": [name], ...}}
_PROFILE_KEY = "profile"
_SENT_KEY = "profile_sent"  # {"version": int, "digest": str}

_LOCATION_FIELDS = ("City", "Country", "Latitude", "Longitude", "PostalCode", "Region")
_SNAKE = {
    "app_version": "AppVersion", "locale": "Locale", "make": "Make", "model": "Model",
    "model_version": "ModelVersion", "platform": "Platform",
    "platform_version": "PlatformVersion", "timezone": "Timezone", "city": "City",
    "country": "Country", "latitude": "Latitude", "longitude": "Longitude",
    "postal_code": "PostalCode", "region": "Region",
}  # fmt: skip


class Endpoint:
    # Thread-safe: the app updates from any thread while the uploader reads and marks sent.

    def __init__(
        self,
        state: MutableMapping[str, Any],
        *,
        app_id: str = "",
        app_version_code: str | None = None,
        probe: Probe | None = None,
    ) -> None:
        self._state = state
        self._app_id = app_id
        self._lock = threading.Lock()
        self.id = _load_or_create_id(state)
        self._auto = demographic(app_version_code, probe)
        saved = _get(state, _PROFILE_KEY)
        if not (isinstance(saved, dict) and isinstance(saved.get("fields"), dict)):
            saved = {"version": 1, "changed": None, "fields": {}}
        self._version: int = saved["version"] if type(saved.get("version")) is int else 1
        self._changed: float | None = saved.get("changed")
        self._fields: dict[str, Any] = saved["fields"]
        # Names removed since the collector last took the profile: it merges too, so it
        # must be told to remove them (as []), until it has.
        cleared = saved.get("cleared")
        self._cleared: dict[str, list[str]] = {
            path: [name for name in names if isinstance(name, str)]
            for path, names in (cleared.items() if isinstance(cleared, dict) else ())
            if path in (*_MAPS, "User.UserAttributes") and isinstance(names, list)
        }
        try:
            check_endpoint(self._compose(0.0))
        except WireError as exc:
            logger.warning("homing: the saved endpoint profile is invalid (%s); starting over", exc)
            self._fields = {}
        sent = _get(state, _SENT_KEY)
        self._sent = sent if isinstance(sent, dict) else {"version": 0, "digest": ""}
        if (
            self._sent.get("digest") != self._digest()
            and self._sent.get("version") == self._version
        ):
            # The device changed under the same profile (an OS or app upgrade): send again.
            self._bump(None)

    # -- reading ------------------------------------------------------------------------

    def profile(self, now: float) -> dict[str, Any]:
        with self._lock:
            return self._compose(self._changed or now)

    def outgoing(self, now: float) -> dict[str, Any]:
        # The profile as sent: with the names removed that the collector may still hold.
        with self._lock:
            return self._with_clears(self._compose(self._changed or now))

    def pending(self, now: float) -> tuple[int, dict[str, Any]] | None:
        # The profile to send with its version, or None when the collector has it.
        with self._lock:
            if self._sent.get("version") == self._version:
                return None
            return self._version, self._with_clears(self._compose(self._changed or now))

    def mark_sent(self, version: int, *, accepted: bool = True) -> None:
        """The collector answered for `version`: it took it, or refused it for good."""
        with self._lock:
            if version != self._version:
                return  # changed while it was in flight: the newer one goes next
            self._sent = {"version": version, "digest": self._digest()}
            _put(self._state, _SENT_KEY, self._sent)
            # A refused profile removed nothing there: the clears go with the next one.
            if accepted and self._cleared:
                self._cleared = {}  # the collector removed them too
                self._save(None)

    def touch(self, now: float) -> None:
        # Send the profile again even though it did not change (at each session start).
        with self._lock:
            self._bump(self._changed or now)

    # -- updating -----------------------------------------------------------------------

    def update(
        self,
        now: float,
        *,
        user_id: Any = None,
        user_attributes: Any = None,
        attributes: Any = None,
        metrics: Any = None,
        address: Any = None,
        channel_type: Any = None,
        opt_out: Any = None,
        location: Any = None,
        demographic: Any = None,
    ) -> None:
        change: dict[str, Any] = {}
        if address is not None:
            change["Address"] = _string(address, "Address")
        if channel_type is not None:
            change["ChannelType"] = _string(channel_type, "ChannelType")
        if opt_out is not None:
            change["OptOut"] = _opt_out(opt_out)
        if attributes is not None:
            change["Attributes"] = _attributes(attributes, "Attributes")
        if metrics is not None:
            change["Metrics"] = _metrics(metrics)
        if location is not None:
            change["Location"] = _renamed(location, "Location", _LOCATION_FIELDS)
        if demographic is not None:
            change["Demographic"] = _renamed(demographic, "Demographic", DEMOGRAPHIC_FIELDS)
        user: dict[str, Any] = {}
        if user_id is not None:
            try:
                user["UserId"] = check_id(user_id, "User.UserId")
            except WireError as exc:
                raise InvalidEndpointError(exc.field, exc.rule) from None
        if user_attributes is not None:
            user["UserAttributes"] = _attributes(user_attributes, "User.UserAttributes")
        if user:
            change["User"] = user
        if not change:
            return
        try:
            # The change as given first: the composed profile below goes through JSON,
            # where a NaN becomes null and its error would no longer say what was wrong,
            # and a string JSON cannot carry would fail to encode.
            check_endpoint(change, "")
        except WireError as exc:
            raise InvalidEndpointError(exc.field, exc.rule) from None
        with self._lock:
            fields = merge(self._fields, change)
            candidate = self._compose(now, fields)
            try:
                check_endpoint(candidate, "")
            except WireError as exc:
                raise InvalidEndpointError(exc.field, exc.rule) from None
            # Measured as the collector measures what it stores: with the fields it adds.
            stored = {**new_endpoint(self._app_id, self.id, format_timestamp(now)), **candidate}
            try:
                check_endpoint_size(stored)
            except WireError as exc:
                raise InvalidEndpointError(
                    exc.field, f"{exc.rule}; remove attributes you no longer need"
                ) from None
            cleared = _clears(self._cleared, change)
            if fields == self._fields and cleared == self._cleared:
                return
            self._fields = fields
            self._cleared = cleared
            self._bump(now)

    # -- internals ----------------------------------------------------------------------

    def _compose(self, effective: float, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        fields = self._fields if fields is None else fields
        profile: dict[str, Any] = {"ChannelType": "CUSTOM"}
        profile.update(_json.loads(_json.dumps(fields)))
        profile["Demographic"] = {**self._auto, **fields.get("Demographic", {})}
        profile["EffectiveDate"] = format_timestamp(effective)
        return profile

    def _with_clears(self, profile: dict[str, Any]) -> dict[str, Any]:
        for path, names in self._cleared.items():
            if path == "User.UserAttributes":
                target = profile.setdefault("User", {}).setdefault("UserAttributes", {})
            else:
                target = profile.setdefault(path, {})
            for name in names:
                # [] is what the collector takes to clear an attribute; None for a field.
                target.setdefault(name, [] if path.endswith("Attributes") else None)
        return profile

    def _digest(self) -> str:
        profile = self._compose(0.0)
        del profile["EffectiveDate"]
        return hashlib.sha256(_json.dumps_sorted(profile)).hexdigest()

    def _bump(self, now: float | None) -> None:
        self._version += 1
        self._save(now)

    def _save(self, now: float | None) -> None:
        # Written before update_endpoint returns: an update survives a kill -9.
        self._changed = now if now is not None else self._changed
        _put(
            self._state,
            _PROFILE_KEY,
            {
                "version": self._version,
                "changed": self._changed,
                "fields": self._fields,
                "cleared": self._cleared,
            },
        )


_MAPS = ("Attributes", "Metrics", "Location", "Demographic")


def merge(fields: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """The collector's merge: given keys replace theirs, None or [] removes one."""
    result: dict[str, Any] = _json.loads(_json.dumps(fields))
    for name in ("Address", "ChannelType", "OptOut"):
        if name in change:
            result[name] = change[name]
    for name in _MAPS:
        if name in change:
            result[name] = merge_map(result.get(name), change[name])
    if "User" in change:
        user = dict(result.get("User", {}))
        if "UserId" in change["User"]:
            user["UserId"] = change["User"]["UserId"]
        if "UserAttributes" in change["User"]:
            user["UserAttributes"] = merge_map(
                user.get("UserAttributes"), change["User"]["UserAttributes"]
            )
        result["User"] = user
    return result


def _clears(cleared: dict[str, list[str]], change: dict[str, Any]) -> dict[str, list[str]]:
    # The names removed by `change` join those the collector has yet to remove; a name
    # given a value again leaves them.
    maps = [(name, change[name]) for name in _MAPS if name in change]
    if "UserAttributes" in change.get("User", {}):
        maps.append(("User.UserAttributes", change["User"]["UserAttributes"]))
    result = {path: list(names) for path, names in cleared.items()}
    for path, values in maps:
        names = set(result.get(path, ()))
        for key, value in values.items():
            if value is None or value == []:
                names.add(key)
            else:
                names.discard(key)
        if names:
            result[path] = sorted(names)
        else:
            result.pop(path, None)
    return result


def _string(value: object, field: str) -> str:
    if type(value) is not str:
        raise InvalidEndpointError(field, f"must be a string, not {type(value).__name__}")
    return value


def _opt_out(value: object) -> str:
    if value is True:
        return "ALL"
    if value is False:
        return "NONE"
    if value in ("ALL", "NONE"):
        return str(value)
    raise InvalidEndpointError("OptOut", 'must be True, False, "ALL" or "NONE"')


def _attributes(value: object, field: str) -> dict[str, list[str]]:
    # One string is a list of one; None or [] clears the attribute on the collector too.
    if not isinstance(value, Mapping):
        raise InvalidEndpointError(field, f"must be a mapping, not {type(value).__name__}")
    result: dict[str, list[str]] = {}
    for key, values in value.items():
        if type(key) is not str:
            raise InvalidEndpointError(field, f"names must be strings, not {type(key).__name__}")
        if values is None:
            values = []
        elif isinstance(values, str):
            values = [values]
        elif isinstance(values, (list, tuple)):
            values = list(values)
        else:
            raise InvalidEndpointError(
                f"{field}.{key}",
                f"must be a string or a list of strings, not {type(values).__name__}",
            )
        result[key] = values
    return result


def _metrics(value: object) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise InvalidEndpointError("Metrics", f"must be a mapping, not {type(value).__name__}")
    for key, number in value.items():
        if type(number) is bool or not isinstance(number, (int, float)):
            raise InvalidEndpointError(
                f"Metrics.{key}", f"must be an int or a float, not {type(number).__name__}"
            )
    return dict(value)


def _renamed(value: object, field: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidEndpointError(field, f"must be a mapping, not {type(value).__name__}")
    result: dict[str, Any] = {}
    for key, item in value.items():
        name = _SNAKE.get(key, key) if isinstance(key, str) else key
        if name not in allowed:
            raise InvalidEndpointError(
                f"{field}.{key}", f"is not a {field} field; use one of {', '.join(allowed)}"
            )
        result[name] = item
    return result


def _get(state: MutableMapping[str, Any], key: str) -> Any:
    try:
        return state.get(key)
    except Exception:
        logger.warning("homing: cannot read the saved %s", key, exc_info=True)
        return None


def _put(state: MutableMapping[str, Any], key: str, value: Any) -> None:
    try:
        state[key] = value
    except Exception:
        logger.warning("homing: cannot save the %s", key, exc_info=True)


def _load_or_create_id(state: MutableMapping[str, Any]) -> str:
    try:
        saved = state.get(_ID_KEY)
        if saved is not None:
            return check_id(saved, "endpoint id")
    except WireError:
        logger.warning("homing: the saved endpoint id %r is invalid; creating a new one", saved)
    except Exception:
        logger.warning("homing: cannot read the saved endpoint id", exc_info=True)
    endpoint_id = str(uuid.uuid4())
    try:
        state[_ID_KEY] = endpoint_id
    except Exception:
        logger.warning("homing: cannot save the endpoint id", exc_info=True)
    return endpoint_id
