"""Homing: offline-first analytics and push for Python apps and devices.

The wire contract that the SDK and the collector share lives in `homing.wire` and
`homing.limits`.
"""

from homing._version import __version__

__all__ = ["__version__"]
