"""The Homing collector: Amazon Pinpoint's REST API for events, endpoints and apps."""

from homing import __version__

__all__ = ["__version__"]
