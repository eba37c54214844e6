"""Event streams (Pinpoint's shapes) and Homing's hook secrets and dead letters."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from homing_collector.models.types import described

MAX_PAGE_SIZE = 1000  # dead letters per page


class WriteEventStream(Struct, kw_only=True):
    DestinationStreamArn: Annotated[
        str,
        Meta(
            description="Homing: an https:// URL (http:// only to a loopback address) that "
            "receives the records, or a file:// directory the operator allowed"
        ),
    ]
    RoleArn: Annotated[str, Meta(description="Accepted and ignored.")]


class EventStream(Struct, omit_defaults=True, kw_only=True):
    ApplicationId: str
    DestinationStreamArn: str
    RoleArn: str
    LastModifiedDate: str | None = None
    LastUpdatedBy: str | None = None
    ExternalId: str | None = None


class HookSecretsResponse(Struct, omit_defaults=True, kw_only=True):
    ApplicationId: str
    Secret: Annotated[str, Meta(description="The secret that signs every call (whsec_...).")]
    RotatedDate: str
    PreviousSecret: Annotated[
        str | None, Meta(description="While a rotation lasts: the secret that signs too.")
    ] = None


class DeadLettersQuery(Struct, omit_defaults=True, rename="kebab"):
    page_size: Annotated[int, Meta(ge=1, le=MAX_PAGE_SIZE)] | None = None
    token: (
        Annotated[str, Meta(pattern=described(r"[0-9]{1,18}", "a NextToken from an earlier page"))]
        | None
    ) = None


class DeadLetter(Struct, omit_defaults=True, kw_only=True):
    Id: Annotated[str, Meta(description="The webhook-id, the same for every attempt.")]
    Destination: str
    Attempts: int
    CreationDate: str
    DeadLetterDate: str
    FirstAttemptDate: str | None = None
    LastError: str | None = None


class DeadLettersResponse(Struct, omit_defaults=True, kw_only=True):
    Item: list[DeadLetter]
    NextToken: str | None = None


class ReplayResponse(Struct):
    Replayed: int
