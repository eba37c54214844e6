"""Import jobs: what CreateImportJob and the upload route take, and what the import job
operations answer (botocore's ImportJobRequest, ImportJobResponse, ImportJobsResponse)."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from homing_collector.models.types import Count

MAX_PAGE_SIZE = 1000  # jobs per page
Format = Literal["CSV", "JSON"]
JobStatus = Literal[
    "CREATED", "PREPARING_FOR_INITIALIZATION", "INITIALIZING", "PROCESSING", "PENDING_JOB",
    "COMPLETING", "COMPLETED", "FAILING", "FAILED",
]  # fmt: skip
# Pinpoint's strings are unbounded; these bounds keep a stored job small.
_Text = Annotated[str, Meta(max_length=2048)]
_Name = Annotated[str, Meta(max_length=256)]


class ImportJobRequest(Struct, omit_defaults=True, kw_only=True):
    Format: Format
    S3Url: _Text
    RoleArn: _Text  # accepted and kept; Homing reads no S3
    DefineSegment: bool | None = None
    ExternalId: _Text | None = None
    RegisterEndpoints: bool | None = None
    SegmentId: _Name | None = None
    SegmentName: _Name | None = None


class ImportJobResource(Struct, omit_defaults=True, kw_only=True):
    Format: Format
    S3Url: str
    RoleArn: str
    DefineSegment: bool | None = None
    ExternalId: str | None = None
    RegisterEndpoints: bool | None = None
    SegmentId: str | None = None
    SegmentName: str | None = None


class ImportJobResponse(Struct, omit_defaults=True, kw_only=True):
    ApplicationId: str
    CreationDate: str
    Definition: ImportJobResource
    Id: str
    JobStatus: JobStatus
    Type: Literal["IMPORT"]
    CompletedPieces: Count | None = None
    CompletionDate: str | None = None
    FailedPieces: Count | None = None
    Failures: list[str] | None = None
    TotalFailures: Count | None = None
    TotalPieces: Count | None = None
    TotalProcessed: Count | None = None


class ImportJobsResponse(Struct, omit_defaults=True, kw_only=True):
    Item: list[ImportJobResponse]
    NextToken: str | None = None


class ImportJobsQuery(Struct, omit_defaults=True, rename="kebab"):
    page_size: Annotated[int, Meta(ge=1, le=MAX_PAGE_SIZE)] | None = None
    token: str | None = None


class UploadQuery(Struct, omit_defaults=True, rename="kebab"):
    """Homing's upload route: the ImportJobRequest's settings, as query parameters."""

    format: Format
    segment_name: _Name | None = None
    segment_id: _Name | None = None
    define_segment: bool | None = None
    register_endpoints: bool | None = None
    file_name: _Name | None = None


class SegmentImportResource(Struct, omit_defaults=True, kw_only=True):
    ExternalId: str
    Format: Format
    RoleArn: str
    S3Url: str
    Size: int
    ChannelCounts: dict[str, int] | None = None
