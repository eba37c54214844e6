"""Endpoint semantics, as Pinpoint defines them.

An update merges into what is stored: an attribute, metric or demographic field that is
given replaces that one, and the rest are kept. `CreationDate` and `CohortId` never
change once set; `EffectiveDate` moves when something changes.
"""

from __future__ import annotations

from typing import Any

import orjson

from homing.wire import (
    WireError,
    check_endpoint,
    check_endpoint_size,
    check_id,
    cohort_id,
    merge_map,
    new_endpoint,
)

Endpoint = dict[str, Any]

_SCALARS = ("Address", "ChannelType", "EndpointStatus", "OptOut", "RequestId")
_MERGED_MAPS = ("Attributes", "Metrics", "Demographic", "Location")

__all__ = ["Endpoint", "check_update", "check_url_id", "cohort_id", "merge"]


def check_url_id(value: object, field: str) -> str:
    """An endpoint or user id: as any id, and without "/". GetEndpoint, DeleteEndpoint,
    GetUserEndpoints and the rest take it as one segment of their path, so an id with "/"
    could be stored but never read, updated or deleted. (Event and session ids never go
    in a URL; they may hold "/".)"""
    checked = check_id(value, field)
    if "/" in checked:
        raise WireError(field, 'must not contain "/": the id is part of the URL of its routes')
    return checked


def check_update(endpoint: object, field: str) -> Endpoint:
    """check_endpoint, with the rule for ids in URLs on `User.UserId`."""
    update = check_endpoint(endpoint, field)
    user_id = (update.get("User") or {}).get("UserId")
    if user_id is not None:
        check_url_id(user_id, f"{field}.User.UserId" if field else "User.UserId")
    return update


def merge(
    app_id: str, endpoint_id: str, existing: Endpoint | None, update: Endpoint, *, now: str
) -> Endpoint:
    """Return the endpoint after `update`; `existing` itself when nothing changed."""
    if existing is None:
        result: Endpoint = new_endpoint(app_id, endpoint_id, now)
    else:
        # A deep copy; `existing` was read from JSON, and a JSON round trip is much faster
        # than copy.deepcopy.
        result = orjson.loads(orjson.dumps(existing))
    for name in _SCALARS:
        if update.get(name) is not None:
            result[name] = update[name]
    for name in _MERGED_MAPS:
        if update.get(name) is not None:
            result[name] = merge_map(result.get(name), update[name])
    user = update.get("User")
    if user is not None:
        merged_user = dict(result.get("User") or {})
        if user.get("UserId") is not None:
            merged_user["UserId"] = user["UserId"]
        if user.get("UserAttributes") is not None:
            merged_user["UserAttributes"] = merge_map(
                merged_user.get("UserAttributes"), user["UserAttributes"]
            )
        result["User"] = merged_user
    effective = update.get("EffectiveDate")
    if (
        existing is not None
        and result == existing
        and effective in (None, existing.get("EffectiveDate"))
    ):
        return existing
    result["EffectiveDate"] = effective or now
    check_endpoint_size(result)
    return result
