"""The route table: each operation declared once, for routing, authorisation, validation
and the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from homing_collector import dashboard, ingest
from homing_collector.analytics import kpis
from homing_collector.campaigns.campaign_shapes import (
    WriteApplicationSettingsRequest,
    WriteCampaignRequest,
)
from homing_collector.campaigns.shapes import WriteSegmentRequest
from homing_collector.models import analytics as a
from homing_collector.models import apps as m
from homing_collector.models import campaigns as cp
from homing_collector.models import device as d
from homing_collector.models import endpoints as e
from homing_collector.models import events as ev
from homing_collector.models import hooks as hk
from homing_collector.models import imports as im
from homing_collector.models import push as p
from homing_collector.models import retention as rt
from homing_collector.models import segments as sg
from homing_collector.models.types import UrlId, with_examples
from homing_collector.operation import NO_ROLE, Operation
from homing_collector.routes import (
    analytics,
    apps,
    campaigns,
    device,
    endpoints,
    events,
    hooks,
    imports,
    keys,
    messages,
    ops,
    push,
    quotas,
    retention,
    segments,
    settings,
    users,
)

APP = "/v1/apps/{application_id}"
SEGMENT = APP + "/segments/{segment_id}"
CAMPAIGN = APP + "/campaigns/{campaign_id}"
DEAD_LETTERS = APP + "/hooks/dead-letters"

# Each path parameter's type, wherever it appears.
PATH_PARAMETERS: dict[str, Any] = {
    "application_id": str,
    "endpoint_id": UrlId,
    "user_id": UrlId,
    "access_key_id": str,
    "segment_id": UrlId,
    "job_id": UrlId,
    "campaign_id": UrlId,
    "delivery_id": UrlId,
    "version": sg.VersionNumber,
    "kpi_name": Literal[kpis.NAMES],
    "name": Literal[tuple(sorted(dashboard.ASSETS.keys() - {dashboard.PAGE}))],
}
# Schemas the document gives that no operation names whole: PutEvents judges each batch
# entry on its own, so its body's schema leaves them open.
EXTRA_SCHEMAS: list[Any] = [ev.EventsBatch, m.Error]

_ENDPOINT_RULES = (
    "Rules JSON Schema cannot say, answered 400 naming the field: strings hold no lone "
    "surrogate; the endpoint, once merged into the stored one, is at most "
    "MAX_ENDPOINT_BYTES as JSON; a user has at most MAX_ENDPOINTS_PER_USER endpoints."
)
_EVENT_RULES = (
    "Each entry of BatchItem is an EventsBatch, judged on its own with each of its events: "
    "one that breaks a rule is answered 400 in Results and the others are stored. Rules "
    "JSON Schema cannot say: at most MAX_EVENTS_PER_REQUEST events in all (else the whole "
    "request is 400); at most MAX_EVENT_KEYS Attributes and Metrics keys together per "
    "event; a StopTimestamp not before its StartTimestamp; no lone surrogates."
)
_SEND_RULES = (
    "Rules JSON Schema cannot say, answered 400 naming the field: each push's data "
    "(Data, the title, body and url, the campaign keys of Context, and each target's "
    "overrides) is at most 4096 bytes as JSON."
)
_DEVICE_RULES = (
    "Once the endpoint has a device credential (CreateDeviceCredential), the header "
    "X-Homing-Device-Credential must carry it, unless the key is an admin key; the answer "
    "is 403 otherwise, naming the header."
)

_NOW = "2026-11-28T17:50:41.123Z"
_EVENT = {
    "EventType": "purchase",
    "Timestamp": _NOW,
    "Attributes": {"sku": "A-1"},
    "Metrics": {"amount": 9.99},
    "Session": {"Id": "s-1", "StartTimestamp": _NOW},
}
_ENDPOINT = {
    "ChannelType": "CUSTOM",
    "User": {"UserId": "user-42"},
    "Demographic": {"Platform": "android"},
    "Attributes": {"plan": ["free"]},
}
_PUSH = {
    "DefaultPushNotificationMessage": {"Title": "Sale", "Body": "20% off today"},
    "GCMMessage": {"TimeToLive": 3600},
}
EVENTS_REQUEST = with_examples(
    ev.EventsRequest,
    {"BatchItem": {"device-1": {"Endpoint": _ENDPOINT, "Events": {"event-1": _EVENT}}}},
)
ENDPOINT_REQUEST = with_examples(e.EndpointRequest, _ENDPOINT)
ENDPOINT_BATCH_REQUEST = with_examples(
    e.EndpointBatchRequest, {"Item": [{**_ENDPOINT, "Id": "device-2"}]}
)
MESSAGE_REQUEST = with_examples(
    p.MessageRequest, {"MessageConfiguration": _PUSH, "Endpoints": {"device-1": {}}}
)
USERS_MESSAGE_REQUEST = with_examples(
    p.SendUsersMessageRequest, {"MessageConfiguration": _PUSH, "Users": {"user-42": {}}}
)
ACKS_REQUEST = with_examples(p.PushAcksRequest, {"MessageIds": ["5f0c2a5e"]})
APP_REQUEST = with_examples(m.CreateApplicationRequest, {"Name": "shop", "tags": {"team": "a"}})
KEY_REQUEST = with_examples(m.CreateKeyRequest, {"Role": "ingest"})
SEGMENT_REQUEST = with_examples(
    WriteSegmentRequest,
    {
        "Name": "android-buyers",
        "Dimensions": {
            "Demographic": {"Platform": {"Values": ["android"]}},
            "Metrics": {"purchases": {"ComparisonOperator": "GREATER_THAN", "Value": 0}},
        },
        "tags": {"team": "growth"},
    },
)
SETTINGS_REQUEST = with_examples(
    WriteApplicationSettingsRequest,
    {
        "Limits": {"Daily": 3, "Total": 10, "MessagesPerSecond": 50, "MaximumDuration": 3600},
        "QuietTime": {"Start": "22:00", "End": "07:00"},
        "CampaignHook": {"Mode": "FILTER", "WebUrl": "https://hooks.example.com/campaigns"},
    },
)
IMPORT_JOB_REQUEST = with_examples(
    im.ImportJobRequest,
    {
        "Format": "CSV",
        "S3Url": "file:///srv/homing-imports/customers.csv",
        "RoleArn": "",
        "DefineSegment": True,
        "SegmentName": "customers",
    },
)
RETENTION_REQUEST = with_examples(rt.RetentionUpdate, {"EventsDays": 90})
_IMPORT_RULES = (
    "Rules JSON Schema cannot say, answered 400 naming the member: S3Url is a file:// URL "
    "of a file inside the directory the collector was started with (--import-dir); "
    "SegmentId names an imported segment of the application; the job does something "
    "(RegisterEndpoints, DefineSegment or SegmentId)."
)
_UPLOAD_RULES = (
    "The body is the import file itself (CSV, or newline-delimited JSON), at most 1 GB, "
    "not compressed, with any Content-Type; it is streamed to disk, never held in memory. "
    "The job defines a segment unless define-segment is false. segment-id, if given, names "
    "an imported segment of the application (else 400)."
)
CAMPAIGN_REQUEST = with_examples(
    WriteCampaignRequest,
    {
        "Name": "spring-sale",
        "SegmentId": "3f5c0a9e7b2d4c1e8a6f0b9d2c4e6a8b",
        "Schedule": {"StartTime": "IMMEDIATE", "Frequency": "ONCE"},
        "MessageConfiguration": {
            "DefaultMessage": {"Title": "Hi {{User.UserAttributes.FirstName}}",
                               "Body": "20% off today"},
        },
        "HoldoutPercent": 10,
        "AdditionalTreatments": [{"SizePercent": 45, "TreatmentName": "B",
            "MessageConfiguration": {"DefaultMessage": {"Title": "Sale", "Body": "Today"}}}],
    },
)  # fmt: skip
_CAMPAIGN_RULES = (
    "Rules JSON Schema cannot say, answered 400 naming the field: SegmentId names a segment "
    "of the application and SegmentVersion one of its versions; SegmentId and Schedule are "
    "required once the campaign is whole (an update keeps the members it does not give); "
    "MessageConfiguration has DefaultMessage, GCMMessage or APNSMessage, unless "
    "CustomDeliveryConfiguration is given; a new Schedule.StartTime is not in the past; "
    "HoldoutPercent and the SizePercent of the treatments add up to at most 100."
)
EVENT_STREAM_REQUEST = with_examples(
    hk.WriteEventStream,
    {
        "DestinationStreamArn": "https://hooks.example.com/pinpoint-events",
        "RoleArn": "arn:aws:iam::123456789012:role/ignored",
    },
)
_STREAM_RULES = (
    "DestinationStreamArn is an https:// URL (http:// only to a loopback address) or a "
    "file:// directory inside the one the operator allowed (serve --stream-dir); anything "
    "else is answered 400 naming the field and the rule. RoleArn is accepted and ignored."
)
_SEGMENT_RULES = (
    "Rules JSON Schema cannot say, answered 400 naming the field: at most 100 dimensions "
    "in all; BEFORE, AFTER, ON and BETWEEN values are ISO-8601 times, BETWEEN two of them "
    "in order; each source segment (and version) exists in the application, and none is "
    "based on the latest version of the segment being written."
)

OPERATIONS = [
    Operation("PutEvents", "POST", APP + "/events", events.put_events, 202,
              "Record a batch of events and update their endpoints", "ingest",
              EVENTS_REQUEST, ev.EventsResponse, notes=_EVENT_RULES,
              check=ingest.check_envelope),
    Operation("UpdateEndpoint", "PUT", APP + "/endpoints/{endpoint_id}",
              endpoints.update_endpoint, 202, "Create or update an endpoint", "ingest",
              ENDPOINT_REQUEST, e.MessageBody, notes=_ENDPOINT_RULES,
              check=endpoints.check_update),
    Operation("UpdateEndpointsBatch", "PUT", APP + "/endpoints", endpoints.update_endpoints_batch,
              202, "Create or update up to 100 endpoints at once", "ingest",
              ENDPOINT_BATCH_REQUEST, e.MessageBody, notes=_ENDPOINT_RULES,
              check=endpoints.check_batch),
    Operation("GetEndpoint", "GET", APP + "/endpoints/{endpoint_id}", endpoints.get_endpoint, 200,
              "Read an endpoint", "admin", None, e.EndpointResponse),
    Operation("DeleteEndpoint", "DELETE", APP + "/endpoints/{endpoint_id}",
              endpoints.delete_endpoint, 202, "Delete an endpoint and its events", "admin",
              None, e.EndpointResponse),
    Operation("GetUserEndpoints", "GET", APP + "/users/{user_id}", users.get_user_endpoints, 200,
              "List the endpoints of a user", "admin", None, e.EndpointsResponse),
    Operation("DeleteUserEndpoints", "DELETE", APP + "/users/{user_id}",
              users.delete_user_endpoints, 202,
              "Delete the endpoints of a user and their events; returns them", "admin",
              None, e.EndpointsResponse),
    Operation("SendMessages", "POST", APP + "/messages", messages.send_messages, 200,
              "Send a push to up to 100 endpoints", "admin", MESSAGE_REQUEST,
              p.MessageResponse, notes=_SEND_RULES, check=messages.check_endpoints),
    Operation("SendUsersMessages", "POST", APP + "/users-messages",
              messages.send_users_messages, 200,
              "Send a push to every endpoint of up to 100 users", "admin",
              USERS_MESSAGE_REQUEST, p.SendUsersMessageResponse, notes=_SEND_RULES,
              check=messages.check_users),
    Operation("OpenPushStream", "GET", APP + "/endpoints/{endpoint_id}/stream", push.open_stream,
              200, "Homing: the endpoint's push stream (Server-Sent Events)", "ingest", None,
              p.PushStream, "text/event-stream", notes=_DEVICE_RULES),
    Operation("AcknowledgePushMessages", "POST", APP + "/endpoints/{endpoint_id}/stream/acks",
              push.acknowledge, 202, "Homing: acknowledge push messages the endpoint handled",
              "ingest", ACKS_REQUEST, p.PushAcksResponse, check=push.check_acks,
              notes=_DEVICE_RULES),
    Operation("CreateDeviceCredential", "POST", APP + "/endpoints/{endpoint_id}/credential",
              device.create_credential, 201,
              "Homing: issue the endpoint's device credential; an ingest key only if it has "
              "none, an admin key reissues it", "ingest", None, d.DeviceCredentialResponse,
              notes="With an ingest key, an endpoint that already has a credential is "
              "answered 409."),
    Operation("RevokeDeviceCredential", "DELETE", APP + "/endpoints/{endpoint_id}/credential",
              device.revoke_credential, 200,
              "Homing: revoke the endpoint's device credential; its push streams end",
              "admin", None, d.DeviceCredentialRevoked),
    Operation("CreateApp", "POST", "/v1/apps", apps.create_app, 201, "Create an application",
              "root", APP_REQUEST, m.ApplicationResponse, check=apps.check_new_app),
    Operation("GetApps", "GET", "/v1/apps", apps.get_apps, 200, "List applications", "root",
              None, m.ApplicationsResponse, query=m.AppsQuery, check=apps.check_page),
    Operation("GetApp", "GET", APP, apps.get_app, 200, "Read an application", "admin",
              None, m.ApplicationResponse),
    Operation("DeleteApp", "DELETE", APP, apps.delete_app, 200,
              "Delete an application with all its endpoints, events and keys", "root",
              None, m.ApplicationResponse),
    Operation("CreateKey", "POST", APP + "/keys", keys.create_key, 201,
              "Homing: create an ingest or admin key for the application", "admin",
              KEY_REQUEST, m.NewKeyResponse, check=keys.check_role),
    Operation("ListKeys", "GET", APP + "/keys", keys.list_keys, 200,
              "Homing: list the application's keys, without secrets", "admin", None,
              m.KeysResponse),
    Operation("RevokeKey", "DELETE", APP + "/keys/{access_key_id}", keys.revoke_key, 200,
              "Homing: revoke a key; it stops working at once", "admin", None, m.KeyResponse),
    Operation("CreateSegment", "POST", APP + "/segments", segments.create_segment, 201,
              "Create a dimensional segment (version 1)", "admin", SEGMENT_REQUEST,
              sg.SegmentResponse, notes=_SEGMENT_RULES, check=segments.check_segment),
    Operation("GetSegments", "GET", APP + "/segments", segments.get_segments, 200,
              "List the latest version of each segment", "admin", None, sg.SegmentsResponse,
              query=sg.SegmentsQuery, check=segments.check_page),
    Operation("GetSegment", "GET", SEGMENT, segments.get_segment, 200,
              "Read the latest version of a segment", "admin", None, sg.SegmentResponse),
    Operation("UpdateSegment", "PUT", SEGMENT, segments.update_segment, 200,
              "Replace a segment's definition, as its next version (tags stay as created)",
              "admin", SEGMENT_REQUEST, sg.SegmentResponse, notes=_SEGMENT_RULES,
              check=segments.check_segment),
    Operation("DeleteSegment", "DELETE", SEGMENT, segments.delete_segment, 200,
              "Delete a segment and all its versions; returns the latest", "admin", None,
              sg.SegmentResponse),
    Operation("GetSegmentVersions", "GET", SEGMENT + "/versions", segments.get_segment_versions,
              200, "List a segment's versions, oldest first", "admin", None,
              sg.SegmentsResponse, query=sg.SegmentVersionsQuery, check=segments.check_page),
    Operation("GetSegmentVersion", "GET", SEGMENT + "/versions/{version}",
              segments.get_segment_version, 200, "Read one version of a segment", "admin",
              None, sg.SegmentResponse),
    Operation("CreateImportJob", "POST", APP + "/jobs/import", imports.create_import_job, 201,
              "Import endpoints from a file the collector may read, and define or update an "
              "imported segment; the job runs in the background", "admin", IMPORT_JOB_REQUEST,
              im.ImportJobResponse, notes=_IMPORT_RULES, check=imports.check_job),
    Operation("UploadImportJob", "POST", APP + "/jobs/import-upload",
              imports.upload_import_job, 201,
              "Homing: import endpoints from the file sent as the body, as CreateImportJob "
              "does", "admin", None, im.ImportJobResponse, query=im.UploadQuery,
              notes=_UPLOAD_RULES, body_media_type="application/octet-stream"),
    Operation("GetImportJobs", "GET", APP + "/jobs/import", imports.get_import_jobs, 200,
              "List the application's import jobs, oldest first", "admin", None,
              im.ImportJobsResponse, query=im.ImportJobsQuery, check=segments.check_page),
    Operation("GetImportJob", "GET", APP + "/jobs/import/{job_id}", imports.get_import_job, 200,
              "Read an import job: its status, progress and first failures", "admin", None,
              im.ImportJobResponse),
    Operation("GetSegmentImportJobs", "GET", SEGMENT + "/jobs/import",
              imports.get_segment_import_jobs, 200,
              "List the import jobs that made the segment's versions, oldest first", "admin",
              None, im.ImportJobsResponse, query=im.ImportJobsQuery, check=segments.check_page),
    Operation("GetQuotas", "GET", APP + "/quotas", quotas.get_quotas, 200,
              "Homing: the quotas in force for the application and each of its keys", "admin",
              None, m.QuotasResource),
    Operation("UpdateQuotas", "PUT", APP + "/quotas", quotas.update_quotas, 200,
              "Homing: set the application's own quotas; null goes back to the server's "
              "default", "root", m.QuotasUpdate, m.QuotasResource,
              notes="A change reaches every worker within 2 seconds."),
    Operation("GetRetention", "GET", APP + "/retention", retention.get_retention, 200,
              "Homing: how many days the application keeps its raw events (null: forever)",
              "admin", None, rt.RetentionResource),
    Operation("UpdateRetention", "PUT", APP + "/retention", retention.update_retention, 200,
              "Homing: set how many days the application keeps its raw events; null keeps "
              "them forever", "admin", RETENTION_REQUEST, rt.RetentionResource,
              notes="Events of hours that began more than EventsDays days ago are deleted in "
              "the background, a few thousand at a time; the analytics rollups are kept."),
    Operation("CreateCampaign", "POST", APP + "/campaigns", campaigns.create_campaign, 201,
              "Create a campaign (version 1); the scheduler runs it", "admin",
              CAMPAIGN_REQUEST, cp.CampaignResponse, notes=_CAMPAIGN_RULES,
              check=campaigns.check_campaign),
    Operation("GetCampaigns", "GET", APP + "/campaigns", campaigns.get_campaigns, 200,
              "List the latest version of each campaign", "admin", None, cp.CampaignsResponse,
              query=cp.CampaignsQuery, check=segments.check_page),
    Operation("GetCampaign", "GET", CAMPAIGN, campaigns.get_campaign, 200,
              "Read the latest version of a campaign, with its state", "admin", None,
              cp.CampaignResponse),
    Operation("UpdateCampaign", "PUT", CAMPAIGN, campaigns.update_campaign, 200,
              "Change a campaign, as its next version: each member given replaces the "
              "stored one", "admin", CAMPAIGN_REQUEST, cp.CampaignResponse,
              notes=_CAMPAIGN_RULES, check=campaigns.check_campaign),
    Operation("DeleteCampaign", "DELETE", CAMPAIGN, campaigns.delete_campaign, 200,
              "Delete a campaign with its versions and activities; returns it, DELETED",
              "admin", None, cp.CampaignResponse),
    Operation("GetCampaignVersions", "GET", CAMPAIGN + "/versions",
              campaigns.get_campaign_versions, 200, "List a campaign's versions, oldest first",
              "admin", None, cp.CampaignsResponse, query=sg.SegmentVersionsQuery,
              check=segments.check_page),
    Operation("GetCampaignVersion", "GET", CAMPAIGN + "/versions/{version}",
              campaigns.get_campaign_version, 200, "Read one version of a campaign", "admin",
              None, cp.CampaignResponse),
    Operation("GetCampaignActivities", "GET", CAMPAIGN + "/activities",
              campaigns.get_campaign_activities, 200,
              "List a campaign's runs (activities), oldest first, with their counts",
              "admin", None, cp.ActivitiesResponse, query=cp.ActivitiesQuery,
              check=segments.check_page),
    Operation("GetCampaignDateRangeKpi", "GET", CAMPAIGN + "/kpis/daterange/{kpi_name}",
              analytics.campaign_date_range_kpi, 200,
              "A push KPI of one campaign's messages over a date range, in Pinpoint's shape",
              "admin", None, a.CampaignDateRangeKpiResponse, query=a.KpiQuery,
              check=analytics.check_kpi,
              notes="kpi-name is one of the push KPIs (successful-delivery-rate, "
              "unique-deliveries, push-open-rate, each also -grouped-by-date); others are "
              "answered 404. start-time must not be after end-time, and the range holds at "
              "most 366 days; otherwise the answer is 400, naming the parameter."),
    Operation("GetApplicationSettings", "GET", APP + "/settings", settings.get_settings, 200,
              "Read the application's campaign Limits, QuietTime and CampaignHook", "admin",
              None, sg.ApplicationSettingsResource),
    Operation("UpdateApplicationSettings", "PUT", APP + "/settings", settings.update_settings,
              200, "Set the application's campaign Limits, QuietTime and CampaignHook; "
              "members not given stay as they were", "admin", SETTINGS_REQUEST,
              sg.ApplicationSettingsResource, check=settings.check_settings,
              notes="QuietTime needs both Start and End, or neither; answered 400 naming "
              "the field."),
    Operation("PutEventStream", "POST", APP + "/eventstream", hooks.put_event_stream, 200,
              "Send every event stored from now on to a receiver, as Pinpoint's event-stream "
              "records in gzip NDJSON batches", "admin", EVENT_STREAM_REQUEST, hk.EventStream,
              notes=_STREAM_RULES, check=hooks.check_write_stream),
    Operation("GetEventStream", "GET", APP + "/eventstream", hooks.get_event_stream, 200,
              "Read the application's event stream", "admin", None, hk.EventStream),
    Operation("DeleteEventStream", "DELETE", APP + "/eventstream", hooks.delete_event_stream,
              200, "Stop the application's event stream; returns it", "admin", None,
              hk.EventStream),
    Operation("GetHookSecrets", "GET", APP + "/hooks/secrets", hooks.get_secrets, 200,
              "Homing: the secret that signs the application's webhook calls (made on first "
              "use), and the previous one while a rotation lasts", "admin", None,
              hk.HookSecretsResponse),
    Operation("RotateHookSecret", "POST", APP + "/hooks/secrets/rotate", hooks.rotate_secrets,
              200, "Homing: a new secret signs beside the current one, which becomes the "
              "previous", "admin", None, hk.HookSecretsResponse),
    Operation("EndHookSecretRotation", "DELETE", APP + "/hooks/secrets/previous",
              hooks.end_rotation, 200,
              "Homing: stop signing with the previous secret", "admin", None,
              hk.HookSecretsResponse),
    Operation("ListHookDeadLetters", "GET", DEAD_LETTERS, hooks.list_dead_letters, 200,
              "Homing: deliveries that were given up on, oldest first", "admin", None,
              hk.DeadLettersResponse, query=hk.DeadLettersQuery, check=hooks.check_page),
    Operation("ReplayHookDeadLetters", "POST", DEAD_LETTERS + "/replay",
              hooks.replay_dead_letters, 200,
              "Homing: try every dead letter again, with a fresh retry budget", "admin", None,
              hk.ReplayResponse),
    Operation("ReplayHookDeadLetter", "POST", DEAD_LETTERS + "/{delivery_id}/replay",
              hooks.replay_dead_letter, 200,
              "Homing: try one dead letter again, with a fresh retry budget", "admin", None,
              hk.ReplayResponse),
    Operation("GetApplicationDateRangeKpi", "GET", APP + "/kpis/daterange/{kpi_name}",
              analytics.date_range_kpi, 200,
              "A push or usage KPI over a date range, in Pinpoint's shape", "admin", None,
              a.ApplicationDateRangeKpiResponse, query=a.KpiQuery, check=analytics.check_kpi,
              notes="start-time must not be after end-time, and the range holds at most "
              "366 days; otherwise the answer is 400, naming the parameter."),
    Operation("GetAnalyticsUsage", "GET", APP + "/analytics/usage", analytics.usage, 200,
              "Homing: active users or endpoints, new, WAU, MAU, sticky factor and sessions "
              "per day", "admin", None, a.AnalyticsUsage, query=a.RangeQuery,
              check=analytics.check_range, notes=a.RANGE_RULES),
    Operation("GetAnalyticsRetention", "GET", APP + "/analytics/retention", analytics.retention,
              200, "Homing: retention cohorts and the d7, d14 and d30 rates", "admin", None,
              a.AnalyticsRetention, query=a.RangeQuery, notes=a.RANGE_RULES,
              check=analytics.check_range),
    Operation("GetAnalyticsDemographics", "GET", APP + "/analytics/demographics",
              analytics.demographics, 200,
              "Homing: endpoints and users by a demographic field or an endpoint attribute",
              "admin", None, a.AnalyticsDemographics, query=a.DemographicsQuery,
              check=analytics.check_dimension),
    Operation("GetAnalyticsEvents", "GET", APP + "/analytics/events", analytics.events, 200,
              "Homing: custom events by type and day, attribute breakdowns and metrics",
              "admin", None, a.AnalyticsEvents, query=a.EventsQuery, check=analytics.check_events,
              notes=a.RANGE_RULES + " A metric filter's number must be finite."),
    Operation("GetAnalyticsFunnel", "GET", APP + "/analytics/funnel", analytics.funnel, 200,
              "Homing: conversion and drop-off through ordered steps", "admin", None,
              a.AnalyticsFunnel, query=a.FunnelQuery, notes=a.RANGE_RULES,
              check=analytics.check_funnel),
    Operation("GetAnalyticsRevenue", "GET", APP + "/analytics/revenue", analytics.revenue, 200,
              "Homing: purchases and revenue per currency", "admin", None, a.AnalyticsRevenue,
              query=a.RangeQuery, notes=a.RANGE_RULES, check=analytics.check_range),
    Operation("GetAnalyticsCampaigns", "GET", APP + "/analytics/campaigns", analytics.campaigns,
              200, "Homing: push messages sent, delivered and opened", "admin", None,
              a.AnalyticsCampaigns, query=a.RangeQuery, notes=a.RANGE_RULES,
              check=analytics.check_range),
    Operation("GetAnalyticsCampaign", "GET", APP + "/analytics/campaigns/{campaign_id}",
              analytics.campaign, 200,
              "Homing: one campaign's sends, deliveries, opens, sessions and purchases after "
              "an open, in all and per treatment", "admin", None, a.AnalyticsCampaign,
              query=a.RangeQuery, notes=a.RANGE_RULES, check=analytics.check_range),
    Operation("Health", "GET", "/healthz", ops.healthz, 200, "Liveness and storage check",
              NO_ROLE, None, m.Health),
    Operation("Metrics", "GET", "/metrics", ops.prometheus, 200,
              "Prometheus metrics in text format", NO_ROLE, None, str, "text/plain"),
    Operation("OpenAPI", "GET", "/openapi.json", ops.openapi, 200, "This document", NO_ROLE,
              None, dict[str, Any]),
    Operation("Dashboard", "GET", "/dashboard", dashboard.page, 200,
              "Homing: the dashboard, one HTML page that reads the analytics routes", NO_ROLE,
              None, str, "text/html"),
    Operation("DashboardAsset", "GET", "/dashboard/static/{name}", dashboard.static, 200,
              "Homing: the dashboard's scripts, style sheet and images", NO_ROLE, None, str,
              ", ".join(sorted({t.split(";")[0] for t in dashboard.CONTENT_TYPES.values()}))),
]  # fmt: skip

# Only with --bench-routes: what ingestion costs without storage, for bench/.
BENCH_OPERATIONS = [
    Operation("ParseOnly", "POST", APP + "/events-parse-only", ops.parse_only, 202,
              "Benchmark ceiling: read and parse a PutEvents body, store nothing", NO_ROLE,
              ev.EventsRequest, None),
]  # fmt: skip
