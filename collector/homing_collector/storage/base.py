"""The storage protocol. Routes and services talk to this, never to SQL.

SQLite (`sqlite.py`) is the default; another backend implements the same protocol.
Every write is committed before its coroutine returns, so what a route acknowledges
is on disk.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    from pathlib import Path

    from homing_collector.analytics.rollups import Summary
    from homing_collector.storage.columnar import Sealed
    from homing_collector.storage.history import StoredEvent

Endpoint = dict[str, Any]
T = TypeVar("T")
# How a request names its key: SigV4 by its id, a bearer token by its SHA-256.
KeyColumn = Literal["access_key_id", "token_sha256"]
# (endpoint id, stored endpoint or None, update) -> the endpoint to store; returning the
# stored object itself means nothing changed.
EndpointMerge = Callable[[str, Endpoint | None, Endpoint], Endpoint]


@dataclass(frozen=True)
class AppRecord:
    id: str
    name: str
    created_at: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyRecord:
    access_key_id: str
    app_id: str | None  # None for root keys
    role: str  # "ingest", "admin" or "root"
    secret: str  # SigV4 needs the secret itself; bearer tokens are stored as hashes only
    token_sha256: str
    created_at: str
    revoked_at: str | None = None


# A named tuple, not a dataclass: ingestion builds one per event, and a tuple is built
# several times faster. The fields are in the order of the columns they fill.
class EventRow(NamedTuple):
    endpoint_id: str
    event_id: str
    event_type: str
    timestamp_ms: int  # when it happened (the arrival time if the client's was too far ahead)
    arrival_ms: int
    session_id: str | None
    body: bytes  # the event as sent, JSON


@dataclass(frozen=True)
class EndpointUpdate:
    endpoint_id: str
    update: Endpoint


@dataclass
class IngestResult:
    rejected_types: set[str] = field(default_factory=set)  # new types past the per-app limit
    endpoint_errors: dict[str, str] = field(default_factory=dict)  # endpoint id -> message
    stored: int = 0  # events written, duplicates not counted
    locked: frozenset[str] = frozenset()  # endpoints a DeviceCheck did not prove


@dataclass(frozen=True)
class DeviceCheck:
    """What a PutEvents caller proves of its endpoints' device credentials
    (homing_collector.device), checked by put_events against the credentials stored for
    `endpoint_ids`, read where the backend reads them cheapest: PostgreSQL in the
    transaction that writes the batch, with the other batches of its group, rather than
    in a round trip of each request's own."""

    endpoint_ids: Sequence[str]  # the endpoints of the request (those with a valid id)
    # The stored credentials (endpoint id -> SHA-256) -> the endpoints not proven, whose
    # updates may not change the fields the device alone may change.
    locked: Callable[[dict[str, str]], frozenset[str]]
    # (merge, the endpoints not proven) -> the merge that refuses such a change.
    guard: Callable[[EndpointMerge, frozenset[str]], EndpointMerge]

    def merge(
        self, merge: EndpointMerge, stored: dict[str, str]
    ) -> tuple[EndpointMerge, frozenset[str]]:
        """The merge for the batch, given the credentials stored (of these endpoints and
        maybe others), and the endpoints it locks."""
        locked = self.locked({e: stored[e] for e in self.endpoint_ids if e in stored})
        return (self.guard(merge, locked) if locked else merge), locked


@dataclass(frozen=True)
class PushMessage:
    """One push for one endpoint, as SendMessages queues it."""

    endpoint_id: str
    message_id: str
    silent: bool
    payload: str  # the push stream's `data:` line, one line of JSON
    campaign_id: str | None
    expires_at: int  # ms since the epoch


class QueuedPush(NamedTuple):
    """A stored push, as a push stream sends it."""

    seq: int  # per endpoint, increasing
    payload: str
    expires_at: int  # ms since the epoch


@dataclass(frozen=True)
class PushQueued:
    seqs: list[int]  # one per message given, in order
    dropped: int  # older messages dropped to keep each endpoint's queue bounded


@dataclass(frozen=True)
class SegmentRecord:
    """One version of a segment."""

    app_id: str
    id: str
    version: int
    created_at: str  # the segment's first version
    modified_at: str  # this version's
    request: str  # the WriteSegmentRequest that made this version, as JSON
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SegmentReference:
    """A source segment a request names, and where it names it."""

    field: str  # such as "SegmentGroups.Groups[0].SourceSegments[1]"
    id: str
    version: int | None  # None: the latest


@dataclass
class ImportJobRecord:
    """An import job and its progress."""

    app_id: str
    id: str
    created_at: str
    definition: str  # the job's ImportJobResource, as JSON
    status: str  # Pinpoint's JobStatus
    total_pieces: int
    segment_id: str | None = None  # the segment it updates, or the one it defined
    completed_pieces: int = 0
    failed_pieces: int = 0
    total_processed: int = 0  # rows read, good or bad
    total_failures: int = 0  # rows refused
    failures: list[str] = field(default_factory=list)  # the first messages
    completed_at: str | None = None
    owner: str = ""  # the process that runs it, while it is not finished
    heartbeat: int = 0  # ms since the epoch, when that process last saved it


class ImportRow(NamedTuple):
    """One endpoint definition of an import file."""

    row: int  # where the file has it, for messages
    endpoint_id: str | None  # None: a row that names only a user, whose endpoints it means
    update: Endpoint  # merged into the stored endpoint, as UpdateEndpoint does


@dataclass(frozen=True)
class CampaignRecord:
    """One version of a campaign."""

    app_id: str
    id: str
    version: int
    created_at: str  # the campaign's first version
    modified_at: str  # this version's
    request: str  # the WriteCampaignRequest of this version, SegmentVersion filled in, JSON
    segment_id: str
    state: str  # SCHEDULED, EXECUTING, PENDING_NEXT_RUN or COMPLETED (IsPaused aside)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ActivityRecord:
    """One run of a campaign, and the scheduler's job for it."""

    app_id: str
    campaign_id: str
    id: str
    version: int  # the campaign version it runs
    scheduled_ms: int
    state: str  # PENDING, RUNNING, COMPLETED or CANCELLED
    started_at: str | None
    ended_at: str | None
    result: str | None
    cursor: str | None  # the last endpoint id of the segment walk done
    total: int
    successful: int
    metrics: dict[str, int]


class CampaignSend(NamedTuple):
    """What one activity did for one endpoint: SENT (with its push), DEFERRED (until
    `at_ms`), or a skip reason such as TREATMENT_HOLDOUT. A named tuple, not a frozen
    dataclass: an event-triggered campaign makes one per match, and a tuple is built
    about four times faster."""

    endpoint_id: str
    status: str
    treatment_id: str | None
    at_ms: int
    message: PushMessage | None = None
    event: EventRow | None = None  # the `_campaign.send` event that goes with a push
    # For an event-triggered campaign, the id of the event that triggered the send: the
    # record is then kept per event, so each event is answered once.
    trigger: str | None = None
    session_id: str | None = None  # the triggering event's session, for the Session limit
    # For a send through a custom channel: the endpoint (after the FILTER hook), of which
    # the chunk's `custom` callback makes the definition the channel gets, and deliveries.
    custom: Mapping[str, Any] | None = None


class PastSend(NamedTuple):
    """One earlier message of a campaign to an endpoint, as its caps count it."""

    at_ms: int
    session_id: str | None


@dataclass(frozen=True)
class ChunkWritten:
    """What `write_campaign_chunk` stored: None of it if the lease was lost."""

    lease_held: bool
    queued: list[tuple[PushMessage, int]] = field(default_factory=list)  # (message, seq)


@dataclass(frozen=True)
class HookSecrets:
    """An application's webhook signing secrets (`whsec_...`); `previous` signs too while
    a rotation lasts."""

    current: str
    previous: str | None
    rotated_at: str


@dataclass(frozen=True)
class NewDelivery:
    """One outgoing call for the outbox: `id` is its webhook-id, for every attempt."""

    id: str
    app_id: str
    destination: str  # an http(s) URL, or file:// for an event stream's file sink
    body: bytes  # exactly the bytes sent and signed
    content_type: str
    content_encoding: str | None = None
    ordered: bool = False  # one at a time per application and destination, in order


class Delivery(NamedTuple):
    """A pending delivery, as a process leased it."""

    seq: int
    id: str
    app_id: str
    destination: str
    ordered: int
    body: bytes
    content_type: str
    content_encoding: str | None
    attempts: int  # made before this one
    created_at: float
    first_attempt_at: float | None


class DeadLetter(NamedTuple):
    seq: int
    id: str
    destination: str
    attempts: int
    created_at: float
    first_attempt_at: float | None
    dead_at: float
    last_error: str | None


@dataclass(frozen=True)
class EventStreamRecord:
    app_id: str
    destination: str
    role_arn: str
    last_modified: str
    last_updated_by: str
    cursor: int  # the rowid of the last event taken into the outbox


class StreamRow(NamedTuple):
    rowid: int
    endpoint_id: str
    event_id: str
    arrival_ms: int
    body: bytes


# A stream's row as read_event_stream's `build` gets it: a StreamRow, or a plain tuple of
# the same values (SQLite's rows as they come: making a StreamRow of each took a sixth of
# the CPU of reading the rows, 0.2 us a row).
StreamValues = tuple[int, str, str, int, bytes]


class HookRow(NamedTuple):
    """An event as the in-process event-stream hooks read it, of any application."""

    rowid: int
    app_id: str
    endpoint_id: str
    event_id: str
    arrival_ms: int
    body: bytes


class StorageError(Exception):
    pass


class UserEndpointLimit(StorageError):
    """Linking an endpoint to a user would give that user too many endpoints."""

    def __init__(self, user_id: str, count: int, limit: int) -> None:
        super().__init__(
            f"User.UserId: user {user_id!r} already has {count} endpoints; "
            f"the limit is {limit} per user"
        )


def user_ids(existing: Endpoint | None, merged: Endpoint) -> tuple[str | None, str | None]:
    """The user id of an endpoint after an update (`merged`), and before it (`existing`)."""
    old = ((existing or {}).get("User") or {}).get("UserId")
    return (merged.get("User") or {}).get("UserId"), old


class SegmentReferenceError(StorageError):
    """A source segment that does not exist, or that would make a cycle."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class ApplicationGone(StorageError):
    """The application was deleted while a long task, such as an import, worked on it."""


class Overloaded(StorageError):
    """The write queue is full; the client should retry later."""


class StorageUnavailable(StorageError):
    """A write could not be completed, and may or may not have been stored; the client
    should retry later (a retried event is stored once)."""


class StorageFull(StorageUnavailable):
    """The database could not grow: its disk is full. The write was rolled back whole;
    the client should retry once space is freed."""


class Storage(Protocol):
    name: str  # the database's kind, as errors name it: "SQLite", "PostgreSQL"
    analytics: bool  # the analytics queries (analytics_read) run on this storage
    rollups: bool  # analytics rollups are kept at ingest
    columnar: Path | None  # the columnar copy of sealed events (storage/columnar.py), if any
    full_since: float | None  # when writes began to fail on a full disk, until one succeeds

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def create_app(self, app: AppRecord) -> None: ...
    async def get_app(self, app_id: str) -> AppRecord | None: ...
    async def list_apps(self, *, after: str | None, limit: int) -> list[AppRecord]: ...
    async def delete_app(self, app_id: str) -> AppRecord | None: ...

    async def create_key(self, key: KeyRecord) -> None: ...
    async def get_key(self, access_key_id: str) -> KeyRecord | None: ...
    async def get_key_by_token(self, token_sha256: str) -> KeyRecord | None: ...
    async def get_caller(
        self, column: KeyColumn, value: str, app_id: str | None
    ) -> tuple[KeyRecord | None, bool]:
        """The key whose `column` is `value`, and whether the application `app_id` exists
        (False for None): what every request reads first, read together."""
        ...

    async def list_keys(self, app_id: str | None = None) -> list[KeyRecord]: ...
    async def revoke_key(self, access_key_id: str, revoked_at: str) -> bool: ...
    # Replace every key's stored secret with rewrite(access key id, stored secret), in one
    # transaction: all or none (sealing, rotating or opening them); return how many changed.
    async def rewrite_secrets(self, rewrite: Callable[[str, str], str]) -> int: ...

    async def put_events(
        self,
        app_id: str,
        endpoints: Sequence[EndpointUpdate],
        events: Sequence[EventRow],
        *,
        merge: EndpointMerge,
        max_event_types: int,
        max_user_endpoints: int,
        summary: Summary | None = None,
        device: DeviceCheck | None = None,
    ) -> IngestResult:
        """`summary`, if given, is what `events` add to the analytics rollups. With
        `device`, `merge` is guarded as it says, from the credentials stored when the
        batch is written, and the result's `locked` names the endpoints it locked."""

    async def update_endpoints(
        self,
        app_id: str,
        endpoints: Sequence[EndpointUpdate],
        *,
        merge: EndpointMerge,
        max_user_endpoints: int,
    ) -> None:
        """All or nothing: raises `UserEndpointLimit` and writes nothing on a violation."""

    async def get_endpoint(self, app_id: str, endpoint_id: str) -> Endpoint | None: ...
    async def delete_endpoint(self, app_id: str, endpoint_id: str) -> Endpoint | None: ...
    async def get_user_endpoints(self, app_id: str, user_id: str) -> list[Endpoint]: ...
    async def delete_user_endpoints(self, app_id: str, user_id: str) -> list[Endpoint]: ...
    async def get_endpoints(self, app_id: str, endpoint_ids: Sequence[str]) -> dict[str, Endpoint]:
        """The endpoints of those ids that exist."""

    # Segments. Each write adds a version; a version never changes once written.
    async def create_segment(
        self, record: SegmentRecord, references: Sequence[SegmentReference]
    ) -> SegmentRecord:
        """Store version 1; raises `SegmentReferenceError` and writes nothing if a
        reference names no stored segment or version."""

    async def update_segment(
        self,
        app_id: str,
        segment_id: str,
        request: str,
        modified_at: str,
        references: Sequence[SegmentReference],
    ) -> SegmentRecord | None:
        """Store the next version; None if there is no such segment. Raises
        `SegmentReferenceError` as `create_segment`, and for a reference that leads back
        to this segment's latest version."""

    async def get_segment(
        self, app_id: str, segment_id: str, version: int | None = None
    ) -> SegmentRecord | None:
        """The version asked for, or the latest."""

    async def list_segments(
        self, app_id: str, *, after: str | None, limit: int
    ) -> list[SegmentRecord]:
        """The latest version of each segment whose id sorts after `after`, by id."""

    async def list_segment_versions(
        self, app_id: str, segment_id: str, *, after: int, limit: int
    ) -> list[SegmentRecord]:
        """The segment's versions above `after`, oldest first."""

    async def delete_segment(self, app_id: str, segment_id: str) -> SegmentRecord | None:
        """Delete every version; return the latest, or None if there was none."""

    async def get_app_quotas(self, app_id: str) -> dict[str, int]:
        """The quotas the application sets for itself (QuotasUpdate's names), if any."""

    async def update_app_quotas(
        self, app_id: str, update: dict[str, int | None], modified_at: str
    ) -> dict[str, int]:
        """Set each quota `update` gives a number, drop each it gives None, keep the
        others; return the ones now set."""

    async def get_app_settings(self, app_id: str) -> tuple[str, str] | None:
        """(settings as JSON, when last changed), if UpdateApplicationSettings ever stored
        any for the application."""

    async def update_app_settings(
        self, app_id: str, update: dict[str, Any], modified_at: str
    ) -> str:
        """Replace each top-level member `update` gives and keep the others, in one
        transaction; return the settings as JSON."""

    # History: an export's walk over events, retention, and leases for background tasks.
    async def events_page(
        self,
        app_id: str,
        lo_ms: int,
        hi_ms: int,
        *,
        after: tuple[int, str, str, str, int] | None,
        limit: int,
    ) -> list[StoredEvent]:
        """Up to `limit` events with lo_ms <= Timestamp < hi_ms, in key order, after the
        key (`StoredEvent.key`) of the last one of the page before."""

    async def get_retention(self, app_id: str) -> int | None:
        """The days of raw events the application keeps; None: forever."""

    async def update_retention(
        self, app_id: str, events_days: int | None, modified_at: str
    ) -> int | None: ...
    async def retention_policies(self) -> list[tuple[str, int]]:
        """(application id, days) of each application that does not keep events forever."""

    async def delete_expired_events(self, app_id: str, before_hour: int, limit: int) -> int:
        """Delete up to `limit` of the app's events of hours before `before_hour`, lowest
        first, in one short transaction; return how many. Rollups are not touched."""

    async def take_lease(self, name: str, owner: str, now_ms: int, ttl_ms: int) -> bool:
        """Take or renew a lease; False while another owner holds it."""

    async def seal_events(self, work: Callable[[sqlite3.Connection], Sealed | None]) -> bool:
        """Run `work` on a read snapshot in a thread, then commit the columnar copy it made
        if nothing changed meanwhile (else throw it away); return whether it committed."""

    # Import jobs. The members of an imported segment are the endpoint ids its job imported.
    async def create_import_job(self, record: ImportJobRecord) -> None: ...
    async def save_import_job(self, record: ImportJobRecord) -> None:
        """Store the job's status and progress."""

    async def get_import_job(self, app_id: str, job_id: str) -> ImportJobRecord | None: ...
    async def list_import_jobs(
        self, app_id: str, *, segment_id: str | None, after: str | None, limit: int
    ) -> list[ImportJobRecord]:
        """The application's jobs (only the segment's, if `segment_id`), by id, whose ids
        sort after `after`."""

    async def unfinished_import_jobs(self) -> list[ImportJobRecord]:
        """Every job, of every application, that is not COMPLETED or FAILED."""

    async def import_endpoints(
        self,
        app_id: str,
        job_id: str,
        rows: Sequence[ImportRow],
        *,
        merge: EndpointMerge,
        max_user_endpoints: int,
        register: bool,
        members: bool,
    ) -> list[tuple[ImportRow, str]]:
        """Store each row's endpoint (if `register`) and note it as a member of the job (if
        `members`), in one transaction; a row that breaks a rule is left out and returned
        with the message. A row without an endpoint id adds its user's stored endpoints.
        Raises `ApplicationGone` if the application was deleted."""

    async def import_member_counts(self, app_id: str, job_id: str) -> dict[str, int]:
        """The job's members by ChannelType ("" for none)."""

    async def import_members_after(
        self, app_id: str, job_id: str, *, after: str | None, limit: int
    ) -> list[str]:
        """Up to `limit` member endpoint ids of the job, by id, after `after`."""

    async def finish_import_job(
        self, record: ImportJobRecord, segment: SegmentRecord | None
    ) -> None:
        """Save the job and, in the same transaction, `segment`: its version 1 if no
        segment has its id yet, else its next version. Raises `SegmentReferenceError` and
        saves nothing if that segment was deleted, `ApplicationGone` if the application
        was."""

    async def endpoints_after(
        self, app_id: str, *, after: str | None, limit: int
    ) -> list[tuple[str, Endpoint]]:
        """Up to `limit` (id, endpoint) pairs whose ids sort after `after`, by id: a walk
        over an application's endpoints, one chunk at a time."""

    # Campaigns. Each write adds a version, as for segments. SegmentReferenceError names
    # SegmentId or SegmentVersion when they name no stored segment.
    async def create_campaign(
        self, record: CampaignRecord, segment_version: int | None
    ) -> CampaignRecord:
        """Store version 1, its request's SegmentVersion set to `segment_version` or, when
        None, to the segment's latest version."""

    async def update_campaign(
        self,
        app_id: str,
        campaign_id: str,
        update: dict[str, Any],
        modified_at: str,
        check: Callable[[dict[str, Any]], None],
    ) -> CampaignRecord | None:
        """Store the next version: the latest request with each top-level member of
        `update` replaced, which `check` must accept; None if there is no such campaign."""

    async def get_campaign(
        self, app_id: str, campaign_id: str, version: int | None = None
    ) -> CampaignRecord | None: ...
    async def list_campaigns(
        self, app_id: str, *, after: str | None, limit: int
    ) -> list[CampaignRecord]: ...
    async def list_campaign_versions(
        self, app_id: str, campaign_id: str, *, after: int, limit: int
    ) -> list[CampaignRecord]: ...
    async def delete_campaign(self, app_id: str, campaign_id: str) -> CampaignRecord | None:
        """Delete the campaign with its versions, activities and send records."""

    async def list_activities(
        self, app_id: str, campaign_id: str, *, after: int, limit: int
    ) -> list[ActivityRecord]:
        """Activities whose scheduled start (ms) is above `after`, oldest first."""

    # The scheduler's side of campaigns.
    async def campaigns_to_plan(self) -> list[tuple[CampaignRecord, int | None]]:
        """Every campaign that may have runs left, with the instant (ms) its runs are
        planned through (None: not yet)."""

    async def plan_runs(
        self,
        app_id: str,
        campaign_id: str,
        version: int,
        runs_ms: Sequence[int],
        missed_ms: Sequence[int],
        planned_ms: int,
        finished: bool,
        *,
        lead_ms: int = 0,
    ) -> None:
        """Add an activity for each run (once, whoever else plans it), to start `lead_ms`
        before the run's instant, record the missed ones as CANCELLED, and move the plan
        forward, unless the campaign changed."""

    async def claim_activity(
        self, owner: str, now_ms: int, lease_ms: int, *, dead: Callable[[str], bool]
    ) -> ActivityRecord | None:
        """Take the lease of one due activity that nobody holds, whose lease expired, or
        whose holder `dead` says is gone; start it if it was PENDING."""

    async def campaign_sends(
        self, app_id: str, campaign_id: str, endpoint_ids: Sequence[str]
    ) -> dict[str, list[PastSend]]:
        """When each endpoint was sent the campaign's message, in any activity, and in
        which session."""

    async def deferred_sends(
        self, app_id: str, campaign_id: str, activity_id: str, *, now_ms: int, limit: int
    ) -> tuple[list[str], int | None]:
        """Endpoints of the activity held back until now or before, and the earliest
        instant (ms) one of the others is held back to (None: none)."""

    async def recent_events(
        self, app_id: str, *, lo_ms: int, hi_ms: int, since_arrival_ms: int
    ) -> list[EventRow]:
        """The application's events that happened in [lo_ms, hi_ms) and arrived at or
        after `since_arrival_ms`."""

    async def event_activity(
        self, app_id: str, campaign_id: str, version: int, scheduled_ms: int, now: str
    ) -> ActivityRecord:
        """The activity that counts an event-triggered campaign's sends (made once). The
        scheduler never claims it: events drive it."""

    async def write_campaign_chunk(
        self,
        activity: ActivityRecord,
        owner: str | None,
        sends: Sequence[CampaignSend],
        *,
        cursor: str | None,
        lease_until_ms: int,
        queue_limit: int,
        custom: Callable[[Sequence[CampaignSend]], Sequence[NewDelivery]] | None = None,
    ) -> ChunkWritten:
        """In one transaction, if `owner` still holds the lease (None: an event activity,
        which has none): record each send (an
        endpoint the activity already has a final row for is left alone), queue the
        pushes of the new SENT rows, and the outbox deliveries that `custom` makes of
        those for a custom channel, store their events, count them in the activity and
        move its cursor."""

    async def finish_activity(
        self,
        activity: ActivityRecord,
        owner: str,
        *,
        not_before_ms: int | None,
        now: str,
        result: str = "SUCCESS",
    ) -> None:
        """Release the lease: the activity waits until `not_before_ms` for its held-back
        endpoints, or, when None, it is COMPLETED with `result` (SUCCESS or FAIL)."""

    # Device credentials: the SHA-256 of each endpoint's secret, if it has one.
    async def device_credentials(
        self, app_id: str, endpoint_ids: Sequence[str]
    ) -> dict[str, str]: ...
    async def set_device_credential(
        self, app_id: str, endpoint_id: str, secret_sha256: str, created_at: str, *, replace: bool
    ) -> bool:
        """Store it; without `replace`, only if the endpoint has none. True if stored."""

    async def delete_device_credential(self, app_id: str, endpoint_id: str) -> bool: ...

    # Push store-and-forward. An endpoint's messages are numbered 1, 2, ... for good: its
    # sequence survives the deletion of its messages and of the endpoint itself.
    async def queue_push(
        self, app_id: str, messages: Sequence[PushMessage], *, queue_limit: int
    ) -> PushQueued:
        """Store the messages; then drop each endpoint's oldest unacknowledged ones beyond
        `queue_limit`."""

    async def pending_push(
        self, app_id: str, endpoint_id: str, *, after_seq: int, now_ms: int
    ) -> list[QueuedPush]:
        """Unacknowledged, unexpired messages with seq > after_seq, oldest first."""

    async def ack_push(
        self, app_id: str, endpoint_id: str, message_ids: Sequence[str], *, now_ms: int
    ) -> int:
        """Mark as delivered; return how many were not already."""

    async def ack_push_through(
        self, app_id: str, endpoint_id: str, seq: int, *, now_ms: int
    ) -> int:
        """Mark every message with seq <= `seq` as delivered; return how many were not.
        Does nothing if `seq` is above the highest seq the endpoint ever had."""

    async def purge_push(self, now_ms: int) -> int:
        """Delete unacknowledged messages that have expired; return how many."""

    async def push_changes(self, since_ms: int) -> list[tuple[str, str, int]] | None:
        """For several processes on one database: None when nothing was committed since
        the last call, else (app, endpoint, highest seq) for each endpoint with messages
        queued since `since_ms` and not yet acknowledged."""

    async def push_wait(self, timeout: float) -> None:
        """Sleep `timeout` seconds, or less: until another process may have queued a
        push, if this storage is told of those (PostgreSQL's NOTIFY)."""

    # Hooks (SQL in outbox.py for SQLite). Times are the hooks' clock, Unix seconds.
    async def hook_secrets(
        self, app_id: str, *, create: str | None = None, now: str = ""
    ) -> HookSecrets | None:
        """The application's secrets; with `create`, made its first if it has none."""

    async def rotate_hook_secrets(self, app_id: str, new: str, now: str) -> HookSecrets: ...
    async def end_hook_rotation(self, app_id: str) -> HookSecrets | None: ...
    async def enqueue_deliveries(self, deliveries: Sequence[NewDelivery], now: float) -> None: ...
    async def deliveries_due(self, now: float) -> bool: ...
    async def claim_deliveries(
        self,
        owner: str,
        now: float,
        lease_until: float,
        *,
        limit: int,
        per_destination: int,
        busy: Sequence[str],
        held: Sequence[int] = (),
    ) -> list[Delivery]: ...
    async def settle_delivery(
        self,
        delivery: Delivery,
        owner: str,
        state: str,
        *,
        now: float,
        next_attempt_at: float = 0.0,
        error: str = "",
    ) -> bool:
        """`state`: delivered, retry, dead, or disable (a 410); False if the lease was lost."""

    async def lease_owners(self, now: float) -> list[str]:
        """The owners of the outbox's leases that have not run out."""

    async def release_leases(self, owners: Sequence[str]) -> int: ...
    async def dead_letters(self, app_id: str, *, after: int, limit: int) -> list[DeadLetter]: ...
    async def replay_dead_letters(
        self, app_id: str, ids: Sequence[str] | None, now: float
    ) -> int: ...
    async def purge_deliveries(self, before: float) -> int: ...
    async def hook_gauges(self) -> dict[str, Any]: ...
    async def pending_deliveries(self, app_id: str, destination: str) -> int: ...
    async def destination_disabled(self, app_id: str, destination: str) -> bool: ...

    async def get_event_stream(self, app_id: str) -> EventStreamRecord | None: ...
    async def list_event_streams(self) -> list[EventStreamRecord]: ...
    async def put_event_stream(
        self, app_id: str, destination: str, role_arn: str, modified: str, by: str
    ) -> EventStreamRecord: ...
    async def delete_event_stream(self, app_id: str) -> EventStreamRecord | None: ...
    async def read_event_stream(
        self,
        app_id: str,
        after: int,
        limit: int,
        build: Callable[[Sequence[StreamValues], dict[str, bytes]], T],
    ) -> tuple[T, int]:
        """In a thread: the events after rowid `after`, with their endpoints' bodies, made
        into `build`'s result there; and the rowid the cursor may move to."""

    async def advance_event_stream(
        self,
        app_id: str,
        after: int,
        to: int,
        deliveries: Sequence[NewDelivery],
        now: float,
    ) -> bool: ...

    # In-process event-stream hooks: a durable cursor per hook name (hooks/hook_stream.py).
    async def open_hook_cursors(self, names: Sequence[str]) -> dict[str, int]:
        """The cursors of `names`, made (after the events stored until now) if new."""

    async def read_hook_stream(
        self,
        name: str,
        limit: int,
        build: Callable[[list[HookRow], dict[tuple[str, str], bytes]], T],
    ) -> tuple[T, int, int]:
        """In a thread: up to `limit` events of every application after the cursor
        `name`, with their endpoints' bodies by (application id, endpoint id), made into
        `build`'s result there; the cursor, and the rowid of the last event read (the
        cursor if there was none)."""

    async def advance_hook_cursor(self, name: str, after: int, to: int) -> bool:
        """Move the cursor from `after` to `to`; False if another process moved it."""

    async def hook_lag(self, names: Sequence[str]) -> dict[str, int]:
        """Per name: how many events were stored after its cursor (an upper bound)."""

    async def analytics_read(self, fn: Callable[[Any], T]) -> T:
        """Run `fn` on a read-only connection in a thread; for analytics queries. The
        connection is the backend's (storage/analytics_backend.py)."""
        ...
