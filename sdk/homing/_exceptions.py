"""Exceptions raised by the Homing SDK at the call site.

Background failures (network, collector, disk) are never raised into the
application: they are logged on the ``homing`` logger and counted in
``Analytics.stats()``. Only call-site mistakes raise::

    Exception
    └── HomingError
        ├── InvalidEventError (also ValueError)
        ├── InvalidEndpointError (also ValueError)
        └── ConfigurationError (also ValueError)
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "HomingError", "InvalidEndpointError", "InvalidEventError"]


class HomingError(Exception):
    """Base class of every exception the SDK raises.

    Example::

        try:
            analytics.record_event("")
        except homing.HomingError as exc:
            print(exc)
    """


class InvalidEventError(HomingError, ValueError):
    """An event breaks the wire contract; it was not stored.

    ``field`` names the offending field and ``rule`` the limit it breaks.

    Example::

        try:
            analytics.record_event("x" * 200)
        except homing.InvalidEventError as exc:
            assert exc.field == "EventType"
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class InvalidEndpointError(HomingError, ValueError):
    """An endpoint profile update breaks the wire contract; nothing was changed.

    ``field`` names the offending field and ``rule`` the limit it breaks.

    Example::

        try:
            analytics.update_endpoint(attributes={"x" * 51: ["a"]})
        except homing.InvalidEndpointError as exc:
            assert exc.field == "Attributes"
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class ConfigurationError(HomingError, ValueError):
    """An argument given to the SDK is invalid (bad URL, unknown network policy...).

    Example::

        try:
            homing.Analytics("app", "not a url", "hm_ingest_x")
        except homing.ConfigurationError as exc:
            print(exc)
    """
