"""Homing: offline-first analytics and push for Python apps and devices.

    analytics = homing.Analytics(app_id, "https://collector.example", "hm_ingest_...")
    analytics.record_event("Item Bought", attributes={"item": "XYZ"}, metrics={"price": 1.99})

The wire contract that the SDK and the collector share lives in `homing.wire` and
`homing.limits`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homing._exceptions import (
    ConfigurationError,
    HomingError,
    InvalidEndpointError,
    InvalidEventError,
)
from homing._types import FlushResult, Stats
from homing._version import __version__

if TYPE_CHECKING:
    from homing._client import Analytics
    from homing._network import NetworkPolicy
    from homing._push import PushStats
    from homing.push import PushMessage

__all__ = [
    "Analytics",
    "ConfigurationError",
    "FlushResult",
    "HomingError",
    "InvalidEndpointError",
    "InvalidEventError",
    "NetworkPolicy",
    "PushMessage",
    "PushStats",
    "Stats",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: the collector imports homing.wire and must not pay for
    # httpx and the uploader, and neither should an app's start-up until it records.
    if name == "Analytics":
        from homing._client import Analytics

        globals()["Analytics"] = Analytics
        return Analytics
    if name == "NetworkPolicy":
        # Public so that apps can say NetworkPolicy("unmetered", unknown="allow").
        from homing._network import NetworkPolicy

        globals()["NetworkPolicy"] = NetworkPolicy
        return NetworkPolicy
    if name == "PushMessage":
        from homing.push import PushMessage

        globals()["PushMessage"] = PushMessage
        return PushMessage
    if name == "PushStats":
        from homing._push import PushStats

        globals()["PushStats"] = PushStats
        return PushStats
    raise AttributeError(f"module 'homing' has no attribute {name!r}")
