"""The OpenAPI 3.1 document, built from the route table so that it lists every route."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from homing import __version__, limits
from homing.wire import CHANNEL_TYPES, DEMOGRAPHIC_FIELDS
from homing_collector.push.messages import ACTIONS, MAX_ACKS, MAX_TARGETS, MAX_TTL_SECONDS

if TYPE_CHECKING:
    from homing_collector.operation import Operation

_STR: dict[str, Any] = {"type": "string"}
_NUM: dict[str, Any] = {"type": "number"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


_ATTRIBUTES = {
    "type": "object",
    "maxProperties": limits.MAX_EVENT_KEYS,
    "propertyNames": {"maxLength": limits.MAX_EVENT_KEY_LENGTH},
    "additionalProperties": {
        "type": "string",
        "maxLength": limits.MAX_EVENT_ATTRIBUTE_VALUE_LENGTH,
    },
}
_ENDPOINT_ATTRIBUTES = {
    "type": "object",
    "propertyNames": {"maxLength": limits.MAX_ENDPOINT_ATTRIBUTE_NAME_LENGTH},
    "additionalProperties": {
        "type": "array",
        "maxItems": limits.MAX_ENDPOINT_ATTRIBUTE_VALUES,
        "items": {"type": "string", "maxLength": limits.MAX_ENDPOINT_ATTRIBUTE_VALUE_LENGTH},
    },
}
_METRICS = {"type": "object", "additionalProperties": _NUM}
_ENDPOINT_FIELDS: dict[str, Any] = {
    "Address": _STR,
    "Attributes": _ENDPOINT_ATTRIBUTES,
    "ChannelType": {"type": "string", "enum": sorted(CHANNEL_TYPES)},
    "Demographic": _obj({name: _STR for name in DEMOGRAPHIC_FIELDS}),
    "EffectiveDate": {"type": "string", "format": "date-time"},
    "EndpointStatus": {"type": "string", "enum": ["ACTIVE", "INACTIVE"]},
    "Location": _obj(
        {
            "City": _STR,
            "Country": _STR,
            "PostalCode": _STR,
            "Region": _STR,
            "Latitude": {"type": "number", "minimum": -90, "maximum": 90},
            "Longitude": {"type": "number", "minimum": -180, "maximum": 180},
        }
    ),
    "Metrics": _METRICS,
    "OptOut": {"type": "string", "enum": ["ALL", "NONE"]},
    "RequestId": _STR,
    "User": _obj({"UserId": _STR, "UserAttributes": _ENDPOINT_ATTRIBUTES}),
}
_STATUS = _obj({"StatusCode": {"type": "integer", "enum": [202, 400]}, "Message": _STR})

_STRING_MAP = {"type": "object", "additionalProperties": _STR}
_PUSH_TEXT = {
    "Title": _STR,
    "Body": _STR,
    "Action": {"type": "string", "enum": list(ACTIONS)},
    "Url": _STR,
    "Data": _STRING_MAP,
    "SilentPush": {"type": "boolean"},
}
_CHANNEL_PUSH = _obj(
    {
        **_PUSH_TEXT,
        "TimeToLive": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_TTL_SECONDS,
            "description": "Seconds the message waits for an offline device.",
        },
    }
)
_SEND_CONFIGURATION = _obj({"TitleOverride": _STR, "BodyOverride": _STR, "Context": _STRING_MAP})
_MESSAGE_CONFIGURATION = _obj(
    {
        "DefaultPushNotificationMessage": _obj(_PUSH_TEXT),
        "GCMMessage": _CHANNEL_PUSH,
        "APNSMessage": _CHANNEL_PUSH,
    }
)
_DELIVERY_STATUSES = [
    "SUCCESSFUL",
    "TEMPORARY_FAILURE",
    "PERMANENT_FAILURE",
    "OPT_OUT",
    "DUPLICATE",
]


def _send_request(targets: str, target_id: str) -> dict[str, Any]:
    """SendMessages' or SendUsersMessages' body: they differ only in whom they target."""
    return _obj(
        {
            "MessageConfiguration": _MESSAGE_CONFIGURATION,
            targets: {
                "type": "object",
                "description": f"{target_id} -> EndpointSendConfiguration.",
                "minProperties": 1,
                "maxProperties": MAX_TARGETS,
                "additionalProperties": _SEND_CONFIGURATION,
            },
            "Context": _STRING_MAP,
            "TraceId": _STR,
        },
        ["MessageConfiguration", targets],
    )


_PUSH_SCHEMAS: dict[str, Any] = {
    "MessageRequest": _send_request("Endpoints", "Endpoint id"),
    "SendUsersMessageRequest": _send_request("Users", "User id"),
    "EndpointMessageResult": _obj(
        {
            "DeliveryStatus": {"type": "string", "enum": _DELIVERY_STATUSES},
            "StatusCode": {"type": "integer", "enum": [200, 202, 403, 404, 409]},
            "MessageId": _STR,
            "StatusMessage": _STR,
            "Address": _STR,
        },
        ["DeliveryStatus", "StatusCode"],
    ),
    "MessageResponse": _obj(
        {
            "ApplicationId": _STR,
            "RequestId": _STR,
            "EndpointResult": {
                "type": "object",
                "additionalProperties": _ref("EndpointMessageResult"),
            },
        },
        ["ApplicationId"],
    ),
    "SendUsersMessageResponse": _obj(
        {
            "ApplicationId": _STR,
            "RequestId": _STR,
            "Result": {
                "type": "object",
                "description": "User id -> endpoint id -> result.",
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": _ref("EndpointMessageResult"),
                },
            },
        },
        ["ApplicationId"],
    ),
    "PushStream": {
        "type": "string",
        "description": "Server-Sent Events: `retry: 5000`, then one `push` event per message "
        "(`id: <seq>`, `data: {MessageId, Silent, ExpiresAt, Data}`) and `: ping` heartbeats. "
        "Send `Last-Event-ID: <seq>` to acknowledge every message up to that seq.",
    },
    "PushAcksRequest": _obj(
        {"MessageIds": {"type": "array", "minItems": 1, "maxItems": MAX_ACKS, "items": _STR}},
        ["MessageIds"],
    ),
    "PushAcksResponse": _obj({"Acknowledged": {"type": "integer", "minimum": 0}}, ["Acknowledged"]),
}

SCHEMAS: dict[str, Any] = {
    "Session": _obj(
        {
            "Id": _STR,
            "StartTimestamp": {"type": "string", "format": "date-time"},
            "StopTimestamp": {"type": "string", "format": "date-time"},
            "Duration": {"type": "integer", "minimum": 0},
        },
        ["Id", "StartTimestamp"],
    ),
    "Event": _obj(
        {
            "EventType": {"type": "string", "maxLength": limits.MAX_EVENT_TYPE_LENGTH},
            "Timestamp": {"type": "string", "format": "date-time"},
            "Attributes": _ATTRIBUTES,
            "Metrics": _METRICS,
            "Session": _ref("Session"),
            "AppPackageName": _STR,
            "AppTitle": _STR,
            "AppVersionCode": _STR,
            "SdkName": _STR,
            "ClientSdkVersion": _STR,
        },
        ["EventType", "Timestamp"],
    ),
    "PublicEndpoint": _obj(_ENDPOINT_FIELDS),
    "EndpointRequest": _obj(_ENDPOINT_FIELDS),
    "EndpointBatchRequest": _obj(
        {
            "Item": {
                "type": "array",
                "maxItems": limits.MAX_ENDPOINTS_PER_BATCH,
                "items": _obj({**_ENDPOINT_FIELDS, "Id": _STR}, ["Id"]),
            }
        },
        ["Item"],
    ),
    "EndpointResponse": _obj(
        {
            **_ENDPOINT_FIELDS,
            "ApplicationId": _STR,
            "Id": _STR,
            "CohortId": _STR,
            "CreationDate": {"type": "string", "format": "date-time"},
        }
    ),
    "EndpointsResponse": _obj(
        {"Item": {"type": "array", "items": _ref("EndpointResponse")}}, ["Item"]
    ),
    "EventsRequest": _obj(
        {
            "BatchItem": {
                "type": "object",
                "description": "Endpoint id -> the endpoint and its events.",
                "additionalProperties": _obj(
                    {
                        "Endpoint": _ref("PublicEndpoint"),
                        "Events": {
                            "type": "object",
                            "description": "Event id -> event.",
                            "additionalProperties": _ref("Event"),
                        },
                    },
                    ["Endpoint", "Events"],
                ),
            }
        },
        ["BatchItem"],
    ),
    "EventsResponse": _obj(
        {
            "Results": {
                "type": "object",
                "additionalProperties": _obj(
                    {
                        "EndpointItemResponse": _STATUS,
                        "EventsItemResponse": {"type": "object", "additionalProperties": _STATUS},
                    }
                ),
            }
        }
    ),
    "MessageBody": _obj({"Message": _STR, "RequestID": _STR}),
    "CreateApplicationRequest": _obj(
        {"Name": _STR, "tags": {"type": "object", "additionalProperties": _STR}}, ["Name"]
    ),
    "ApplicationResponse": _obj(
        {
            "Arn": _STR,
            "Id": _STR,
            "Name": _STR,
            "CreationDate": _STR,
            "tags": {"type": "object", "additionalProperties": _STR},
        },
        ["Arn", "Id", "Name"],
    ),
    "ApplicationsResponse": _obj(
        {"Item": {"type": "array", "items": _ref("ApplicationResponse")}, "NextToken": _STR}
    ),
    "CreateKeyRequest": _obj({"Role": {"type": "string", "enum": ["ingest", "admin"]}}, ["Role"]),
    "KeyResponse": _obj(
        {
            "AccessKeyId": _STR,
            "ApplicationId": _STR,
            "Role": {"type": "string", "enum": ["ingest", "admin"]},
            "CreationDate": _STR,
            "RevokedDate": {"type": ["string", "null"]},
        }
    ),
    "NewKeyResponse": {
        "allOf": [
            _ref("KeyResponse"),
            _obj(
                {
                    "SecretAccessKey": {"type": "string", "description": "Shown once."},
                    "Token": {"type": "string", "description": "For Authorization: Bearer."},
                }
            ),
        ]
    },
    "KeysResponse": _obj({"Item": {"type": "array", "items": _ref("KeyResponse")}}, ["Item"]),
    **_PUSH_SCHEMAS,
    "Health": _obj({"status": {"type": "string", "enum": ["ok"]}}),
    "Error": _obj({"Message": _STR, "RequestID": _STR}, ["Message"]),
}

_DATE = {"type": "string", "format": "date"}
_RATE = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INT = {"type": "integer", "minimum": 0}
_LIST = {"type": "array", "items": _STR}
_RANGE_PARAMETERS: tuple[tuple[str, Any], ...] = (
    ("start", _DATE),
    ("end", _DATE),
    ("tz", _STR),
    ("by", {"type": "string", "enum": ["users", "endpoints"]}),
)
_QUERY_PARAMETERS: dict[str, tuple[tuple[str, Any], ...]] = {
    "GetApps": (("page-size", {"type": "string"}), ("token", _STR)),
    "GetAnalyticsUsage": _RANGE_PARAMETERS,
    "GetAnalyticsRetention": _RANGE_PARAMETERS,
    "GetAnalyticsDemographics": (("dimension", _STR),),
    "GetAnalyticsEvents": (
        *_RANGE_PARAMETERS,
        ("event_type", _LIST),
        ("breakdown", _STR),
        ("include", _LIST),
        ("exclude", _LIST),
        ("metric", _LIST),
    ),
    "GetAnalyticsFunnel": (*_RANGE_PARAMETERS, ("step", _LIST), ("window", _INT)),
    "GetAnalyticsRevenue": _RANGE_PARAMETERS,
    "GetAnalyticsCampaigns": _RANGE_PARAMETERS,
    "GetApplicationDateRangeKpi": (
        ("start-time", {"type": "string", "format": "date-time"}),
        ("end-time", {"type": "string", "format": "date-time"}),
        ("next-token", _STR),
        ("page-size", _STR),
    ),
}
_HEAD = {"start": _DATE, "end": _DATE, "tz": _STR, "by": {"type": "string"}}
_SESSION_FIGURES = {
    "sessions": _INT,
    "sessions_per_active": _NUM_OR_NULL,
    "avg_session_seconds": _NUM_OR_NULL,
    "median_session_seconds": _NUM_OR_NULL,
}
_AMOUNTS = {"type": "object", "additionalProperties": _NUM_OR_NULL}
_ROW_VALUE = _obj({"Key": _STR, "Type": _STR, "Value": _STR}, ["Key", "Type", "Value"])
SCHEMAS.update(
    {
        "AnalyticsUsage": _obj(
            {
                **_HEAD,
                "days": {
                    "type": "array",
                    "items": _obj(
                        {
                            "date": _DATE,
                            "active": _INT,
                            "new": _INT,
                            "wau": _INT,
                            "mau": _INT,
                            "sticky_factor": _RATE,
                            **_SESSION_FIGURES,
                        }
                    ),
                },
                "summary": _obj(
                    {
                        "avg_daily_active": _NUM,
                        "mau": _INT,
                        "sticky_factor": _RATE,
                        "new": _INT,
                        **_SESSION_FIGURES,
                    }
                ),
            }
        ),
        "AnalyticsRetention": _obj(
            {
                **_HEAD,
                "cohorts": {
                    "type": "array",
                    "items": _obj(
                        {
                            "date": _DATE,
                            "size": _INT,
                            "retained": {"type": "array", "items": _RATE, "maxItems": 30},
                        }
                    ),
                },
                "rates": _obj({"d7": _RATE, "d14": _RATE, "d30": _RATE}),
            }
        ),
        "AnalyticsDemographics": _obj(
            {
                "dimension": _STR,
                "rows": {
                    "type": "array",
                    "items": _obj(
                        {"value": {"type": ["string", "null"]}, "endpoints": _INT, "users": _INT}
                    ),
                },
            }
        ),
        "AnalyticsEvents": _obj(
            {
                **_HEAD,
                "types": {"type": "array", "items": _obj({"event_type": _STR, "count": _INT})},
                "series": {
                    "type": "array",
                    "items": _obj({"date": _DATE, "event_type": _STR, "count": _INT}),
                },
                "breakdown": {
                    "type": "array",
                    "items": _obj({"value": {"type": ["string", "null"]}, "count": _INT}),
                },
                "metrics": {
                    "type": "array",
                    "items": _obj(
                        {
                            "name": _STR,
                            "count": _INT,
                            "min": _NUM,
                            "max": _NUM,
                            "avg": _NUM,
                            "sum": _NUM,
                            "per_session_avg": _NUM_OR_NULL,
                        }
                    ),
                },
            }
        ),
        "AnalyticsFunnel": _obj(
            {
                **_HEAD,
                "window": _INT,
                "steps": {
                    "type": "array",
                    "items": _obj(
                        {
                            "event_type": _STR,
                            "attributes": {"type": "object", "additionalProperties": _STR},
                            "count": _INT,
                            "conversion": _RATE,
                            "drop_off": _RATE,
                        }
                    ),
                },
            }
        ),
        "AnalyticsRevenue": _obj(
            {
                **_HEAD,
                "purchases": _INT,
                "revenue": _AMOUNTS,
                "revenue_per_user": _AMOUNTS,
                "days": {
                    "type": "array",
                    "items": _obj({"date": _DATE, "purchases": _INT, "revenue": _AMOUNTS}),
                },
            }
        ),
        "AnalyticsCampaigns": _obj(
            {
                **_HEAD,
                "sent": _INT,
                "delivered": _INT,
                "opened": _INT,
                "delivery_rate": _RATE,
                "open_rate": _NUM_OR_NULL,
                "sessions_after_open": _INT,
                "campaigns": {
                    "type": "array",
                    "items": _obj(
                        {"campaign_id": _STR, "sent": _INT, "delivered": _INT, "opened": _INT}
                    ),
                },
                "days": {
                    "type": "array",
                    "items": _obj({"date": _DATE, "sent": _INT, "delivered": _INT, "opened": _INT}),
                },
            }
        ),
        "ApplicationDateRangeKpiResponse": _obj(
            {
                "ApplicationId": _STR,
                "KpiName": _STR,
                "StartTime": {"type": "string", "format": "date-time"},
                "EndTime": {"type": "string", "format": "date-time"},
                "NextToken": _STR,
                "KpiResult": _obj(
                    {
                        "Rows": {
                            "type": "array",
                            "items": _obj(
                                {
                                    "GroupedBys": {"type": "array", "items": _ROW_VALUE},
                                    "Values": {"type": "array", "items": _ROW_VALUE},
                                },
                                ["GroupedBys", "Values"],
                            ),
                        }
                    },
                    ["Rows"],
                ),
            },
            ["ApplicationId", "KpiName", "StartTime", "EndTime", "KpiResult"],
        ),
    }
)

_ERRORS = {
    "400": "BadRequestException: the field and the rule it broke",
    "403": "ForbiddenException: missing, bad or revoked credentials, or the wrong role or app",
    "404": "NotFoundException",
    "405": "MethodNotAllowedException",
    "413": "PayloadTooLargeException: over 4 MB, compressed or inflated",
    "429": "TooManyRequestsException: retry after the Retry-After header's seconds",
}


def document(operations: Sequence[Operation]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for op in operations:
        operation: dict[str, Any] = {"operationId": op.name, "summary": op.summary}
        params = [
            {"name": name.replace("_", "-"), "in": "path", "required": True, "schema": _STR}
            for name in re.findall(r"{(\w+)}", op.path)
        ]
        params += [
            {"name": name, "in": "query", "schema": schema}
            for name, schema in _QUERY_PARAMETERS.get(op.name, ())
        ]
        if params:
            operation["parameters"] = params
        if op.request:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(op.request)}},
            }
        success: dict[str, Any] = {"description": "Success"}
        if op.response:
            success["content"] = {op.media_type: {"schema": _ref(op.response)}}
        elif op.media_type != "application/json":
            success["content"] = {op.media_type: {"schema": _STR}}
        operation["responses"] = {str(op.status): success}
        if op.role == "none":
            operation["security"] = []
        else:
            operation["description"] = f"Needs a key with the {op.role} role or above."
            operation["responses"].update(
                {
                    code: {
                        "description": text,
                        "content": {"application/json": {"schema": _ref("Error")}},
                    }
                    for code, text in _ERRORS.items()
                }
            )
        path = re.sub(r"{(\w+)}", lambda m: "{" + m.group(1).replace("_", "-") + "}", op.path)
        paths.setdefault(path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Homing collector",
            "version": __version__,
            "description": "Amazon Pinpoint's REST API for events, endpoints, apps and push, "
            "self-hosted.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "sigv4": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "AWS Signature Version 4, service mobiletargeting, any region",
                },
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"sigv4": []}, {"bearer": []}],
    }
