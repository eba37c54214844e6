"""Segments and application settings: what CreateSegment, UpdateSegment and
UpdateApplicationSettings take (the campaign engine's request shapes, the models the
engine reads), and what those operations answer."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from homing_collector.campaigns.campaign_shapes import CampaignHook, CampaignLimits, QuietTime
from homing_collector.campaigns.shapes import SegmentDimensions, SegmentGroupList
from homing_collector.models.imports import SegmentImportResource
from homing_collector.models.types import described

MAX_PAGE_SIZE = 1000  # segments or versions per page
# A version in a URL: a whole number from 1.
VersionNumber = Annotated[
    str, Meta(pattern=described(r"[1-9][0-9]{0,8}", "a whole number from 1"), max_length=9)
]


class SegmentsQuery(Struct, omit_defaults=True, rename="kebab"):
    page_size: Annotated[int, Meta(ge=1, le=MAX_PAGE_SIZE)] | None = None
    token: str | None = None


class SegmentVersionsQuery(Struct, omit_defaults=True, rename="kebab"):
    page_size: Annotated[int, Meta(ge=1, le=MAX_PAGE_SIZE)] | None = None
    # The NextToken of the page before: the last version number it held.
    token: (
        Annotated[str, Meta(pattern=described(r"[0-9]{1,9}", "a NextToken from an earlier page"))]
        | None
    ) = None


class SegmentResponse(Struct, omit_defaults=True, kw_only=True):
    ApplicationId: str
    Arn: str
    CreationDate: str
    Id: str
    SegmentType: Literal["DIMENSIONAL", "IMPORT"]
    Version: int
    LastModifiedDate: str
    tags: dict[str, str]
    Name: str | None = None
    Dimensions: SegmentDimensions | None = None
    SegmentGroups: SegmentGroupList | None = None
    ImportDefinition: SegmentImportResource | None = None


class SegmentsResponse(Struct, omit_defaults=True, kw_only=True):
    Item: list[SegmentResponse]
    NextToken: str | None = None


class ApplicationSettingsResource(Struct, omit_defaults=True, kw_only=True):
    ApplicationId: str
    LastModifiedDate: str
    CampaignHook: CampaignHook
    Limits: CampaignLimits
    QuietTime: QuietTime
    JourneyLimits: dict[str, Any] | None = None
