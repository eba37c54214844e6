"""Pinpoint's campaign operations: CreateCampaign, GetCampaign(s), UpdateCampaign,
DeleteCampaign, GetCampaignVersion(s) and GetCampaignActivities. Every write stores a
new version; the scheduler (`campaigns.scheduler`) runs them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from homing.wire import WireError, format_timestamp, whole_number
from homing_collector.campaigns.campaign_shapes import (
    IMMEDIATE,
    CampaignLimits,
    WriteCampaignRequest,
    timestamp,
)
from homing_collector.campaigns.channels import check_channels, delivers_custom, has_push
from homing_collector.campaigns.decode import convert
from homing_collector.errors import bad_request, not_found
from homing_collector.hooks.registry import Registry
from homing_collector.models.campaigns import (
    ActivitiesResponse,
    ActivityResponse,
    CampaignResponse,
    CampaignsResponse,
    CampaignState,
    TreatmentResource,
)
from homing_collector.routes._common import Call, begin
from homing_collector.routes.apps import ARN_PREFIX
from homing_collector.storage.base import ActivityRecord, CampaignRecord, SegmentReferenceError

# A StartTime this far in the past is still taken, for clocks that differ a little.
START_TIME_SLACK = timedelta(minutes=1)


def check_campaign(payload: Any) -> WriteCampaignRequest:
    try:
        return convert(payload, WriteCampaignRequest)
    except WireError as exc:
        raise bad_request(str(exc)) from None


def check_whole(
    request: WriteCampaignRequest, *, allow_http: bool = False, registry: Registry | None = None
) -> None:
    """The rules a campaign as a whole follows, beyond its shape; raise WireError.
    `allow_http`: the operator lets hooks be http:// URLs to any host; `registry`: the
    in-process hooks that `hook:NAME` URLs may name (None: names are not looked up)."""
    if request.SegmentId is None:
        raise WireError("SegmentId", "is required: the segment the campaign sends to")
    if request.Schedule is None:
        raise WireError("Schedule", "is required, with at least StartTime")
    check_channels(request, allow_http=allow_http, registry=registry)
    if not delivers_custom(request) and not has_push(request.MessageConfiguration):
        raise WireError(
            "MessageConfiguration",
            "needs DefaultMessage, GCMMessage or APNSMessage, or a CustomMessage with a "
            "CustomDeliveryConfiguration: Homing's campaigns send push notifications or "
            "call a custom channel",
        )


def check_start(request: WriteCampaignRequest, now: datetime) -> None:
    """A new StartTime is not in the past, as Pinpoint answers."""
    if request.Schedule is not None and request.Schedule.StartTime != IMMEDIATE:
        start = timestamp(request.Schedule.StartTime, "Schedule.StartTime")
        if start < now - START_TIME_SLACK:
            raise WireError(
                "Schedule.StartTime",
                "must be at least the current time; use IMMEDIATE to start now",
            )


def campaign_response(record: CampaignRecord, state: str | None = None) -> CampaignResponse:
    request = convert(msgspec.json.decode(record.request), WriteCampaignRequest)
    status = state or record.state
    if state is None and request.IsPaused and status != "COMPLETED":
        status = "PAUSED"
    treatments = [
        TreatmentResource(
            Id=str(index),
            SizePercent=t.SizePercent,
            CustomDeliveryConfiguration=t.CustomDeliveryConfiguration,
            MessageConfiguration=t.MessageConfiguration,
            Schedule=t.Schedule,
            State=CampaignState(CampaignStatus=status),  # type: ignore[arg-type]
            TemplateConfiguration=t.TemplateConfiguration,
            TreatmentDescription=t.TreatmentDescription,
            TreatmentName=t.TreatmentName,
        )
        for index, t in enumerate(request.AdditionalTreatments or [], 1)
    ]
    the_state = CampaignState(CampaignStatus=status)  # type: ignore[arg-type]
    return CampaignResponse(
        ApplicationId=record.app_id,
        Arn=f"{ARN_PREFIX}{record.app_id}/campaigns/{record.id}",
        CreationDate=record.created_at,
        Id=record.id,
        LastModifiedDate=record.modified_at,
        SegmentId=record.segment_id,
        SegmentVersion=request.SegmentVersion or 1,
        Version=record.version,
        State=the_state,
        DefaultState=the_state if treatments else None,
        AdditionalTreatments=treatments,
        HoldoutPercent=request.HoldoutPercent or 0,
        IsPaused=bool(request.IsPaused),
        Limits=request.Limits or CampaignLimits(),
        tags=record.tags,
        CustomDeliveryConfiguration=request.CustomDeliveryConfiguration,
        Description=request.Description,
        Hook=request.Hook,
        MessageConfiguration=request.MessageConfiguration,
        Name=request.Name,
        Priority=request.Priority,
        Schedule=request.Schedule,
        TemplateConfiguration=request.TemplateConfiguration,
        TreatmentDescription=request.TreatmentDescription,
        TreatmentName=request.TreatmentName,
    )


def activity_response(activity: ActivityRecord) -> ActivityResponse:
    state = activity.state
    return ActivityResponse(
        ApplicationId=activity.app_id,
        CampaignId=activity.campaign_id,
        Id=activity.id,
        ScheduledStart=format_timestamp(activity.scheduled_ms / 1000),
        State=state,  # type: ignore[arg-type]
        TotalEndpointCount=activity.total,
        SuccessfulEndpointCount=activity.successful,
        ExecutionMetrics=execution_metrics(activity.metrics),
        Start=activity.started_at,
        End=activity.ended_at,
        Result=activity.result,  # type: ignore[arg-type]
    )


def execution_metrics(counts: dict[str, int]) -> dict[str, str]:
    """Pinpoint's ExecutionMetrics: ENDPOINT_PRODUCED, every endpoint of the segment the
    run decided on, then each reason one got no message (SENT ones are
    TotalEndpointCount)."""
    metrics = {name: count for name, count in counts.items() if name != "SENT"}
    produced = sum(count for name, count in counts.items() if name != "MISSED")
    if produced or "MISSED" not in counts:
        metrics["ENDPOINT_PRODUCED"] = produced
    return {name: str(count) for name, count in sorted(metrics.items())}


async def create_campaign(request: Request) -> Response:
    call = await begin(request)
    campaign: WriteCampaignRequest = call.checked
    now = datetime.now(timezone.utc)
    allow_http = request.app.state.settings.hooks_allow_http
    registry = request.app.state.hooks.registry
    try:
        check_whole(campaign, allow_http=allow_http, registry=registry)
        check_start(campaign, now)
    except WireError as exc:
        raise bad_request(str(exc)) from None
    assert campaign.SegmentId is not None
    stamp = _stamp(now)
    record = CampaignRecord(
        app_id=call.app_id,
        id=uuid.uuid4().hex,
        version=1,
        created_at=stamp,
        modified_at=stamp,
        request=_stored(campaign),
        segment_id=campaign.SegmentId,
        state="SCHEDULED",
        tags=campaign.tags or {},
    )
    try:
        stored = await call.storage.create_campaign(record, campaign.SegmentVersion)
    except SegmentReferenceError as exc:
        raise bad_request(str(exc)) from None
    request.app.state.scheduler.wake()
    return _answer(campaign_response(stored), 201)


async def update_campaign(request: Request) -> Response:
    call = await begin(request)
    campaign_id = _campaign_id(request)
    campaign: WriteCampaignRequest = call.checked
    now = datetime.now(timezone.utc)
    # Each member given replaces the stored one, the others stay (an update with IsPaused
    # alone pauses a campaign); tags stay as created, as for segments.
    update = msgspec.to_builtins(msgspec.structs.replace(campaign, tags=None))

    allow_http = request.app.state.settings.hooks_allow_http
    # The hooks a campaign names are looked up when they are written: an update that
    # leaves them as stored still pauses a campaign whose plugin is gone since.
    given = (campaign.Hook, campaign.CustomDeliveryConfiguration, campaign.AdditionalTreatments)
    registry = request.app.state.hooks.registry if any(m is not None for m in given) else None

    def check(merged: dict[str, Any]) -> None:
        check_whole(convert(merged, WriteCampaignRequest), allow_http=allow_http, registry=registry)

    if campaign.Schedule is not None:
        stored = await call.storage.get_campaign(call.app_id, campaign_id)
        old = None if stored is None else msgspec.json.decode(stored.request).get("Schedule")
        if old is None or old.get("StartTime") != campaign.Schedule.StartTime:
            try:
                check_start(campaign, now)
            except WireError as exc:
                raise bad_request(str(exc)) from None
    try:
        record = await call.storage.update_campaign(
            call.app_id, campaign_id, update, _stamp(now), check
        )
    except (SegmentReferenceError, WireError) as exc:
        raise bad_request(str(exc)) from None
    request.app.state.scheduler.wake()
    return _answer(campaign_response(_found(call, campaign_id, record)))


async def get_campaign(request: Request) -> Response:
    call = await begin(request)
    campaign_id = _campaign_id(request)
    record = await call.storage.get_campaign(call.app_id, campaign_id)
    return _answer(campaign_response(_found(call, campaign_id, record)))


async def get_campaign_version(request: Request) -> Response:
    call = await begin(request)
    campaign_id = _campaign_id(request)
    version = whole_number(request.path_params["version"], 9)
    if version is None or version < 1:
        raise bad_request("version: must be a whole number from 1")
    record = await call.storage.get_campaign(call.app_id, campaign_id, version)
    if record is None and await call.storage.get_campaign(call.app_id, campaign_id) is not None:
        raise not_found(f"Campaign {campaign_id} has no version {version}")
    return _answer(campaign_response(_found(call, campaign_id, record)))


async def get_campaigns(request: Request) -> Response:
    call = await begin(request)
    size: int = call.checked
    records = await call.storage.list_campaigns(
        call.app_id, after=request.query_params.get("token"), limit=size + 1
    )
    body = CampaignsResponse(Item=[campaign_response(r) for r in records[:size]])
    if len(records) > size:
        body.NextToken = records[size - 1].id
    return _answer(body)


async def get_campaign_versions(request: Request) -> Response:
    call = await begin(request)
    campaign_id = _campaign_id(request)
    size: int = call.checked
    after = _token(request)
    records = await call.storage.list_campaign_versions(
        call.app_id, campaign_id, after=after, limit=size + 1
    )
    if not records and await call.storage.get_campaign(call.app_id, campaign_id) is None:
        raise not_found(f"Campaign {campaign_id} does not exist")
    body = CampaignsResponse(Item=[campaign_response(r) for r in records[:size]])
    if len(records) > size:
        body.NextToken = str(records[size - 1].version)
    return _answer(body)


async def get_campaign_activities(request: Request) -> Response:
    call = await begin(request)
    campaign_id = _campaign_id(request)
    size: int = call.checked
    after = _token(request)
    activities = await call.storage.list_activities(
        call.app_id, campaign_id, after=after, limit=size + 1
    )
    if not activities and await call.storage.get_campaign(call.app_id, campaign_id) is None:
        raise not_found(f"Campaign {campaign_id} does not exist")
    body = ActivitiesResponse(Item=[activity_response(a) for a in activities[:size]])
    if len(activities) > size:
        body.NextToken = str(activities[size - 1].scheduled_ms)
    return _answer(body)


async def delete_campaign(request: Request) -> Response:
    call = await begin(request)
    campaign_id = _campaign_id(request)
    record = await call.storage.delete_campaign(call.app_id, campaign_id)
    return _answer(campaign_response(_found(call, campaign_id, record), state="DELETED"))


def _token(request: Request) -> int:
    token = request.query_params.get("token")
    after = 0 if token is None else whole_number(token, 15)
    if after is None:
        raise bad_request("token: must be a NextToken from an earlier page")
    return after


def _campaign_id(request: Request) -> str:
    # Campaign ids are the collector's own: any other string is simply not found.
    return request.path_params["campaign_id"]  # type: ignore[no-any-return]


def _found(call: Call, campaign_id: str, record: CampaignRecord | None) -> CampaignRecord:
    if record is None:
        raise not_found(f"Campaign {campaign_id} does not exist in application {call.app_id}")
    return record


def _stored(campaign: WriteCampaignRequest) -> str:
    # Tags live beside the versions, not in them.
    return msgspec.json.encode(msgspec.structs.replace(campaign, tags=None)).decode()


def _stamp(now: datetime) -> str:
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _answer(body: Any, status_code: int = 200) -> Response:
    return Response(
        msgspec.json.encode(body), status_code=status_code, media_type="application/json"
    )
