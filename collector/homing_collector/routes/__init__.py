"""The route table. Each operation is described once, for routing and for OpenAPI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from homing_collector.routes import analytics, apps, endpoints, events, keys, ops, users

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str
    handler: Handler
    status: int
    summary: str
    auth: str  # the least role that may call it: "none", "ingest", "admin" or "root"
    request: str | None = None  # component schema of the body
    response: str | None = None  # component schema of the answer
    media_type: str = "application/json"


APP = "/v1/apps/{application_id}"

OPERATIONS = [
    Operation("PutEvents", "POST", APP + "/events", events.put_events, 202,
              "Record a batch of events and update their endpoints", "ingest",
              "EventsRequest", "EventsResponse"),
    Operation("UpdateEndpoint", "PUT", APP + "/endpoints/{endpoint_id}",
              endpoints.update_endpoint, 202, "Create or update an endpoint", "ingest",
              "EndpointRequest", "MessageBody"),
    Operation("UpdateEndpointsBatch", "PUT", APP + "/endpoints", endpoints.update_endpoints_batch,
              202, "Create or update up to 100 endpoints at once", "ingest",
              "EndpointBatchRequest", "MessageBody"),
    Operation("GetEndpoint", "GET", APP + "/endpoints/{endpoint_id}", endpoints.get_endpoint, 200,
              "Read an endpoint", "admin", None, "EndpointResponse"),
    Operation("DeleteEndpoint", "DELETE", APP + "/endpoints/{endpoint_id}",
              endpoints.delete_endpoint, 202, "Delete an endpoint and its events", "admin",
              None, "EndpointResponse"),
    Operation("GetUserEndpoints", "GET", APP + "/users/{user_id}", users.get_user_endpoints, 200,
              "List the endpoints of a user", "admin", None, "EndpointsResponse"),
    Operation("DeleteUserEndpoints", "DELETE", APP + "/users/{user_id}",
              users.delete_user_endpoints, 202,
              "Delete the endpoints of a user and their events; returns them", "admin",
              None, "EndpointsResponse"),
    Operation("CreateApp", "POST", "/v1/apps", apps.create_app, 201, "Create an application",
              "root", "CreateApplicationRequest", "ApplicationResponse"),
    Operation("GetApps", "GET", "/v1/apps", apps.get_apps, 200, "List applications", "root",
              None, "ApplicationsResponse"),
    Operation("GetApp", "GET", APP, apps.get_app, 200, "Read an application", "admin",
              None, "ApplicationResponse"),
    Operation("DeleteApp", "DELETE", APP, apps.delete_app, 200,
              "Delete an application with all its endpoints, events and keys", "root",
              None, "ApplicationResponse"),
    Operation("CreateKey", "POST", APP + "/keys", keys.create_key, 201,
              "Homing: create an ingest or admin key for the application", "admin",
              "CreateKeyRequest", "NewKeyResponse"),
    Operation("ListKeys", "GET", APP + "/keys", keys.list_keys, 200,
              "Homing: list the application's keys, without secrets", "admin", None,
              "KeysResponse"),
    Operation("RevokeKey", "DELETE", APP + "/keys/{access_key_id}", keys.revoke_key, 200,
              "Homing: revoke a key; it stops working at once", "admin", None, "KeyResponse"),
    Operation("GetApplicationDateRangeKpi", "GET", APP + "/kpis/daterange/{kpi_name}",
              analytics.date_range_kpi, 200,
              "A push or usage KPI over a date range, in Pinpoint's shape", "admin", None,
              "ApplicationDateRangeKpiResponse"),
    Operation("GetAnalyticsUsage", "GET", APP + "/analytics/usage", analytics.usage, 200,
              "Homing: active users or endpoints, new, WAU, MAU, sticky factor and sessions "
              "per day", "admin", None, "AnalyticsUsage"),
    Operation("GetAnalyticsRetention", "GET", APP + "/analytics/retention", analytics.retention,
              200, "Homing: retention cohorts and the d7, d14 and d30 rates", "admin", None,
              "AnalyticsRetention"),
    Operation("GetAnalyticsDemographics", "GET", APP + "/analytics/demographics",
              analytics.demographics, 200,
              "Homing: endpoints and users by a demographic field or an endpoint attribute",
              "admin", None, "AnalyticsDemographics"),
    Operation("GetAnalyticsEvents", "GET", APP + "/analytics/events", analytics.events, 200,
              "Homing: custom events by type and day, attribute breakdowns and metrics",
              "admin", None, "AnalyticsEvents"),
    Operation("GetAnalyticsFunnel", "GET", APP + "/analytics/funnel", analytics.funnel, 200,
              "Homing: conversion and drop-off through ordered steps", "admin", None,
              "AnalyticsFunnel"),
    Operation("GetAnalyticsRevenue", "GET", APP + "/analytics/revenue", analytics.revenue, 200,
              "Homing: purchases and revenue per currency", "admin", None, "AnalyticsRevenue"),
    Operation("GetAnalyticsCampaigns", "GET", APP + "/analytics/campaigns", analytics.campaigns,
              200, "Homing: push messages sent, delivered and opened", "admin", None,
              "AnalyticsCampaigns"),
    Operation("Health", "GET", "/healthz", ops.healthz, 200, "Liveness and storage check", "none",
              None, "Health"),
    Operation("Metrics", "GET", "/metrics", ops.prometheus, 200,
              "Prometheus metrics in text format", "none", None, None, "text/plain"),
    Operation("OpenAPI", "GET", "/openapi.json", ops.openapi, 200, "This document", "none",
              None, None),
]  # fmt: skip

# Only with --bench-routes: what ingestion costs without storage, for bench/.
BENCH_OPERATIONS = [
    Operation("ParseOnly", "POST", APP + "/events-parse-only", ops.parse_only, 202,
              "Benchmark ceiling: read and parse a PutEvents body, store nothing", "none",
              "EventsRequest", None),
]  # fmt: skip
