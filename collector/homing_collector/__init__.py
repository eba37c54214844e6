"""The Homing collector: Amazon Pinpoint's REST API for events, endpoints and apps."""

from homing import __version__
from homing_collector.hooks.registry import Hooks

__all__ = ["Hooks", "__version__"]
