"""Applications and their keys; the operational answers."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from homing_collector.models.types import Timestamp
from homing_collector.quotas import MAX_QUOTA

APP_ROLES = ("ingest", "admin")  # the roles of an application's keys; root keys have none
MAX_APP_NAME_LENGTH = 256
MAX_PAGE_SIZE = 1000  # applications per GetApps page

AppName = Annotated[str, Meta(min_length=1, max_length=MAX_APP_NAME_LENGTH, pattern=r"\S")]
AppRole = Literal[APP_ROLES]  # type: ignore[valid-type]


class AppsQuery(Struct, omit_defaults=True, rename="kebab"):
    page_size: Annotated[int, Meta(ge=1, le=MAX_PAGE_SIZE)] | None = None
    token: str | None = None


class CreateApplicationRequest(Struct, kw_only=True):
    Name: AppName
    tags: dict[str, str] | None = None


class ApplicationResponse(Struct, kw_only=True):
    Arn: str
    Id: str
    Name: str
    CreationDate: str
    tags: dict[str, str]


class ApplicationsResponse(Struct, omit_defaults=True, kw_only=True):
    Item: list[ApplicationResponse]
    NextToken: str | None = None


class CreateKeyRequest(Struct):
    Role: AppRole


class KeyResponse(Struct, kw_only=True):
    AccessKeyId: str
    ApplicationId: str
    Role: AppRole
    CreationDate: str
    RevokedDate: str | None


class NewKeyResponse(KeyResponse, kw_only=True):
    SecretAccessKey: Annotated[str, Meta(description="Shown once.")]
    Token: Annotated[str, Meta(description="For Authorization: Bearer; shown once.")]


class KeysResponse(Struct):
    Item: list[KeyResponse]


class Health(Struct, omit_defaults=True):
    """`degraded` while the disk is full: reads are served, writes answered 503."""

    status: Literal["ok", "degraded"]
    reason: str | None = None
    since: Timestamp | None = None  # when writes began to fail


Quota = Annotated[int, Meta(ge=1, le=MAX_QUOTA, description="per second")]


class QuotasUpdate(Struct, omit_defaults=True, forbid_unknown_fields=True):
    """The application's own quotas. A number replaces the quota; null goes back to the
    server's default; a quota left out stays as it was."""

    KeyRequestsPerSecond: Quota | UnsetType | None = UNSET
    KeyEventsPerSecond: Quota | UnsetType | None = UNSET
    RequestsPerSecond: Quota | UnsetType | None = UNSET
    EventsPerSecond: Quota | UnsetType | None = UNSET


class QuotasResource(Struct, kw_only=True):
    """The quotas in force: Key* for each key of the application, the others for the
    application as a whole. `Own` names those the application sets; the others are the
    server's defaults."""

    ApplicationId: str
    KeyRequestsPerSecond: int
    KeyEventsPerSecond: int
    RequestsPerSecond: int
    EventsPerSecond: int
    Own: list[str]


class Error(Struct):
    Message: str
    RequestID: str
