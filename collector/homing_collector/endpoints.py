"""Endpoint semantics, as Pinpoint defines them.

An update merges into what is stored: an attribute, metric or demographic field that is
given replaces that one, and the rest are kept. `CreationDate` and `CohortId` never
change once set; `EffectiveDate` moves when something changes.
"""

from __future__ import annotations

from typing import Any

import orjson

from homing.wire import check_endpoint_size, cohort_id, merge_map, new_endpoint

Endpoint = dict[str, Any]

_SCALARS = ("Address", "ChannelType", "EndpointStatus", "OptOut", "RequestId")
_MERGED_MAPS = ("Attributes", "Metrics", "Demographic", "Location")

__all__ = ["Endpoint", "cohort_id", "merge"]


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
