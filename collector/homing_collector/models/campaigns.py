"""Campaigns: what GetCampaign(s), GetCampaignVersion(s), DeleteCampaign and
GetCampaignActivities answer (botocore `pinpoint` 2016-12-01, CampaignResponse and
ActivityResponse). The requests are the campaign engine's `WriteCampaignRequest`."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from homing_collector.campaigns.campaign_shapes import (
    CampaignHook,
    CampaignLimits,
    CustomDeliveryConfiguration,
    MessageConfiguration,
    Schedule,
    TemplateConfiguration,
)
from homing_collector.models.segments import MAX_PAGE_SIZE
from homing_collector.models.types import described

CampaignStatus = Literal[
    "SCHEDULED", "EXECUTING", "PENDING_NEXT_RUN", "COMPLETED", "PAUSED", "DELETED", "INVALID"
]


class CampaignsQuery(Struct, omit_defaults=True, rename="kebab"):
    page_size: Annotated[int, Meta(ge=1, le=MAX_PAGE_SIZE)] | None = None
    token: str | None = None


class ActivitiesQuery(Struct, omit_defaults=True, rename="kebab"):
    page_size: Annotated[int, Meta(ge=1, le=MAX_PAGE_SIZE)] | None = None
    # The NextToken of the page before: the scheduled start, in ms, of its last activity.
    token: (
        Annotated[str, Meta(pattern=described(r"[0-9]{1,15}", "a NextToken from an earlier page"))]
        | None
    ) = None


class CampaignState(Struct, omit_defaults=True, kw_only=True):
    CampaignStatus: CampaignStatus | None = None


class TreatmentResource(Struct, omit_defaults=True, kw_only=True):
    Id: str
    SizePercent: int
    CustomDeliveryConfiguration: CustomDeliveryConfiguration | None = None
    MessageConfiguration: MessageConfiguration | None = None
    Schedule: Schedule | None = None
    State: CampaignState | None = None
    TemplateConfiguration: TemplateConfiguration | None = None
    TreatmentDescription: str | None = None
    TreatmentName: str | None = None


class CampaignResponse(Struct, omit_defaults=True, kw_only=True):
    ApplicationId: str
    Arn: str
    CreationDate: str
    Id: str
    LastModifiedDate: str
    SegmentId: str
    SegmentVersion: int
    Version: int
    State: CampaignState
    AdditionalTreatments: list[TreatmentResource]
    HoldoutPercent: int
    IsPaused: bool
    Limits: CampaignLimits
    tags: dict[str, str]
    CustomDeliveryConfiguration: CustomDeliveryConfiguration | None = None
    DefaultState: CampaignState | None = None
    Description: str | None = None
    Hook: CampaignHook | None = None
    MessageConfiguration: MessageConfiguration | None = None
    Name: str | None = None
    Priority: int | None = None
    Schedule: Schedule | None = None
    TemplateConfiguration: TemplateConfiguration | None = None
    TreatmentDescription: str | None = None
    TreatmentName: str | None = None


class CampaignsResponse(Struct, omit_defaults=True, kw_only=True):
    Item: list[CampaignResponse]
    NextToken: str | None = None


class ActivityResponse(Struct, omit_defaults=True, kw_only=True):
    ApplicationId: str
    CampaignId: str
    Id: str
    ScheduledStart: str
    State: Literal["PENDING", "RUNNING", "COMPLETED", "CANCELLED"]
    TotalEndpointCount: int
    SuccessfulEndpointCount: int
    ExecutionMetrics: dict[str, str]
    TreatmentId: str | None = None
    Start: str | None = None
    End: str | None = None
    Result: Literal["SUCCESS", "FAIL"] | None = None
    TimezonesTotalCount: int | None = None
    TimezonesCompletedCount: int | None = None


class ActivitiesResponse(Struct, omit_defaults=True, kw_only=True):
    Item: list[ActivityResponse]
    NextToken: str | None = None
