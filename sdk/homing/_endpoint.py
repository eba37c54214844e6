"""The endpoint: a stable id for this installation and the profile sent with each batch.

Minimal for now (channel and basic demographics); the full profile (location, user,
opt-out, attributes) is a later issue.
"""

from __future__ import annotations

import logging
import platform
import uuid
from collections.abc import MutableMapping
from typing import Any

from homing.wire import WireError, check_endpoint, check_id, format_timestamp

logger = logging.getLogger("homing")

_ID_KEY = "endpoint_id"


class Endpoint:
    # Reads or creates the endpoint id in `state` and builds the profile.

    def __init__(
        self,
        state: MutableMapping[str, Any],
        *,
        app_version_code: str | None = None,
    ) -> None:
        self.id = _load_or_create_id(state)
        demographic: dict[str, str] = {}
        for name, value in (
            ("Platform", platform.system()),
            ("PlatformVersion", platform.release()),
            ("AppVersion", app_version_code),
        ):
            if value:
                demographic[name] = value
        self._demographic = demographic

    def profile(self, now: float) -> dict[str, Any]:
        profile: dict[str, Any] = {
            "ChannelType": "CUSTOM",
            "Demographic": dict(self._demographic),
            "EffectiveDate": format_timestamp(now),
        }
        check_endpoint(profile)
        return profile


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
