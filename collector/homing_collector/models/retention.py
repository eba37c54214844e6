"""Homing's own: how long an application keeps its raw events."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from homing_collector.retention import MAX_DAYS

# A number, not an integer: 90.0 is a whole number too, as JSON Schema says.
EventsDays = Annotated[float, Meta(ge=1, le=MAX_DAYS, multiple_of=1, description="days")]


class RetentionUpdate(Struct, forbid_unknown_fields=True):
    """The days of raw events to keep; null keeps them forever. Rollups are always kept."""

    EventsDays: EventsDays | None


class RetentionResource(Struct):
    """How long the application keeps its raw events: EventsDays days, or forever (null)."""

    ApplicationId: str
    EventsDays: int | None
