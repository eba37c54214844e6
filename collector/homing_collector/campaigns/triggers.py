"""Event-triggered campaigns: events matched after PutEvents' commit against the compiled
filters kept in memory, and the matches sent to the endpoint that sent each event.

`offer` runs in the PutEvents route once the batch is committed and the answer is ready:
when no campaign of the application has an event filter it costs one dict lookup, and
otherwise the matching of the batch's events, with no I/O. The matches wait in a bounded
queue for one task that checks each endpoint against the campaign's segment, decides it
as a run would (treatments, opt-out, caps, quiet time, the five-minute window) and
commits its send record, push and `_campaign.send` event together, keyed by the event's
id: a resent event is answered once. A pass that found company (more than one match, or
more waiting after it) is followed by the rest of SEND_WINDOW, so that under load the
matches of a campaign are committed in one transaction and reach its custom channel in
calls of up to 50 endpoints, as a run's do; a lone match goes at once.

The filters are rebuilt by the scheduler's tick from the campaigns it reads anyway, so a
change reaches every process of `serve --workers` within a second. A match still in the
queue when the process dies is found again at the next start (`recover`), as long as
its five minutes are not over: Pinpoint drops what it cannot send by then, and so does
Homing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from homing import limits
from homing.wire import format_timestamp
from homing_collector.lifetime import stop
from homing_collector.storage.base import CampaignRecord, CampaignSend, EventRow, PastSend

from .campaign_shapes import WriteCampaignRequest
from .delivery import EVENT_DELIVERY_WINDOW
from .event_filter import FilterIndex, compile_campaign_filter

if TYPE_CHECKING:
    from .scheduler import Decision, Run, Scheduler

logger = logging.getLogger("homing_collector")

MAX_QUEUED = 100_000  # matches waiting to be sent; more are dropped and counted
MAX_PER_PASS = 1000  # matches decided and committed together at most
# Seconds from a busy send pass to the next: the matches that come meanwhile go together,
# in one transaction per campaign and custom-channel calls of up to 50 endpoints, rather
# than one of each per event. A lone match (a quiet time) is followed by no wait. Each
# call costs about a millisecond of CPU (an outbox claim, an HTTP call and its settling):
# bench/collector_cpu.py's campaign case, 100,000 events, made 570 to 713 calls with 0.1 s,
# 177 to 232 with 0.5 s, and its event-stream process's CPU per event fell by 6 us, a
# quarter. bench/collector_ingest.py --event-stream --campaign, two runs of each
# alternated: 156 calls with 1.0 s against 343 to 346 with 0.5 s, and 16.5 to 17.2 us of
# the collector's CPU per event against 18.7 to 19.1. Under load a triggered message
# waits a second at most, as Pinpoint's own take seconds.
SEND_WINDOW = 1.0
MEMBERSHIP_TTL = timedelta(seconds=60)  # a compiled segment is read again after this
# At start-up, events that happened this long ago at most are matched again (see recover):
# the index is read by time, so older ones (an SDK's offline queue) would cost a scan.
RECOVERY_SPAN = timedelta(hours=1)


class Match(NamedTuple):  # a tuple: one is made per match, and built faster than a dataclass
    app_id: str
    campaign_id: str
    endpoint_id: str
    event_id: str
    at: datetime  # when the event arrived
    session_id: str | None = None  # the event's Session.Id, for the Session limit


def session_of(event: Mapping[str, Any]) -> str | None:
    """The session an event came in, if it says (PutEvents' `Session.Id`)."""
    session = event.get("Session")
    found = session.get("Id") if isinstance(session, dict) else None
    return found if isinstance(found, str) and found else None


@dataclass
class _Campaign:
    record: CampaignRecord
    request: WriteCampaignRequest
    run: Run | None = None  # prepared at its first match, and again after MEMBERSHIP_TTL
    prepared: datetime | None = None


class Triggers:
    def __init__(
        self, scheduler: Scheduler, clock: Callable[[], datetime], *, window: float = SEND_WINDOW
    ) -> None:
        self.scheduler = scheduler
        self.clock = clock
        self.window = window
        self._indexes: dict[str, FilterIndex] = {}
        self._campaigns: dict[str, _Campaign] = {}
        self._seen: dict[str, int] = {}  # campaign id -> version, as last built
        # The matches waiting, and set when there are some: a deque, not an asyncio.Queue,
        # whose put and get cost a microsecond or so each per match.
        self._queue: deque[Match] = deque()
        self._waiting = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    def refresh(self, campaigns: Sequence[tuple[CampaignRecord, WriteCampaignRequest]]) -> None:
        """Rebuild the filters if an EVENT campaign was added, changed or deleted."""
        seen = {record.id: record.version for record, _ in campaigns}
        if seen == self._seen:
            return
        self._seen = seen
        kept = {}
        by_app: dict[str, list[Any]] = {}
        for record, request in campaigns:
            old = self._campaigns.get(record.id)
            kept[record.id] = (
                old if old is not None and old.record.version == record.version
                else _Campaign(record, request)
            )  # fmt: skip
            if request.IsPaused or request.Schedule is None:
                continue
            created = datetime.fromisoformat(record.created_at.replace("Z", "+00:00"))
            compiled = compile_campaign_filter(record.id, request.Schedule, created=created)
            if compiled is not None:
                by_app.setdefault(record.app_id, []).append(compiled)
        self._campaigns = kept
        self._indexes = {app_id: FilterIndex(filters) for app_id, filters in by_app.items()}

    def offer(
        self,
        app_id: str,
        rows: Sequence[EventRow],
        results: Mapping[str, Any],
        *,
        from_admin: bool,
    ) -> int:
        """Match the stored events of one PutEvents batch; queue what they trigger.
        Returns how many matches were queued."""
        index = self._indexes.get(app_id)
        if index is None:
            return 0
        types = index.event_types(from_admin=from_admin)
        if types is not None:
            # bench/collector_ingest.py --campaign: one event in 12 is of the campaign's
            # type; the others cost a set lookup each.
            rows = [row for row in rows if row.event_type in types]
            if not rows:
                return 0
        now = self.clock()
        queued = 0
        for row in rows:
            if not index.candidates(row.event_type, from_admin=from_admin):
                continue
            status = results[row.endpoint_id]["EventsItemResponse"].get(row.event_id)
            if status is None or status.get("StatusCode") != 202:
                continue
            if index.plain(row.event_type, from_admin=from_admin):
                # The filters test the type alone: the event's body is not parsed, and
                # its session is the row's (ingest read it from the same Session.Id).
                found = index.match_plain(row.event_type, now, from_admin=from_admin)
                session_id = row.session_id or None
            else:
                event = orjson.loads(row.body)
                found = index.match(event, from_admin=from_admin, at=now)
                session_id = session_of(event)
            for campaign_id in found:
                queued += self._put(
                    Match(app_id, campaign_id, row.endpoint_id, row.event_id, now, session_id)
                )
        return queued

    def _put(self, match: Match) -> int:
        """Queue a match, unless MAX_QUEUED wait already (then it is counted as dropped);
        returns how many were queued."""
        if len(self._queue) >= MAX_QUEUED:
            self.dropped += 1
            return 0
        self._queue.append(match)
        self._waiting.set()
        return 1

    async def recover(self) -> int:
        """Match again the events that arrived in the last five minutes (those that
        happened in the last RECOVERY_SPAN): after a crash, the matches of some may have
        been lost. A send is recorded under its event's id, so an event answered before
        is not answered twice. Which key sent an event is not stored: only ENDPOINT
        filters are matched here. Returns how many matches were queued."""
        now = self.clock()
        now_ms = int(now.timestamp() * 1000)
        since = now_ms - int(EVENT_DELIVERY_WINDOW.total_seconds() * 1000)
        lo_ms = now_ms - int(RECOVERY_SPAN.total_seconds() * 1000)
        hi_ms = now_ms + limits.MAX_FUTURE_SKEW_SECONDS * 1000 + 1
        queued = 0
        for app_id, index in list(self._indexes.items()):
            rows = await self.scheduler.storage.recent_events(
                app_id, lo_ms=lo_ms, hi_ms=hi_ms, since_arrival_ms=since
            )
            for row in rows:
                at = datetime.fromtimestamp(row.arrival_ms / 1000, timezone.utc)
                event = orjson.loads(row.body)
                for campaign_id in index.match(event, at=at):
                    queued += self._put(
                        Match(app_id, campaign_id, row.endpoint_id, row.event_id, at,
                              session_of(event))
                    )  # fmt: skip
        return queued

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            while not queue:
                self._waiting.clear()
                await self._waiting.wait()
            if len(queue) <= MAX_PER_PASS:
                batch = list(queue)
                queue.clear()
            else:
                batch = [queue.popleft() for _ in range(MAX_PER_PASS)]
            started = loop.time()
            try:
                await self.send(batch)
            except Exception:
                logger.exception("%d event-triggered campaign messages failed", len(batch))
            if len(batch) > 1 or queue:
                # Busy: the matches that come meanwhile wait for the next pass, together.
                await asyncio.sleep(max(0.0, started + self.window - loop.time()))

    async def send(self, matches: Sequence[Match]) -> None:
        """Decide and send each match, one transaction per campaign."""
        by_campaign: dict[str, list[Match]] = {}
        for match in matches:
            by_campaign.setdefault(match.campaign_id, []).append(match)
        for campaign_id, found in by_campaign.items():
            campaign = self._campaigns.get(campaign_id)
            if campaign is None:
                continue  # deleted since
            run = await self._run(campaign)
            if run is None:
                continue
            storage = self.scheduler.storage
            ids = list(dict.fromkeys(m.endpoint_id for m in found))
            endpoints = await storage.get_endpoints(campaign.record.app_id, ids)
            # Copied, so that the matches of this batch count against the caps too.
            sent_before = {
                k: list(v) for k, v in (await self.scheduler.sent_before(run, ids)).items()
            }
            now = self.clock()
            now_ms = int(now.timestamp() * 1000)
            sends: list[Decision] = []
            run.addresses.clear()
            # An endpoint's membership is read once a pass, however many of its events
            # matched (bench/collector_ingest.py --campaign: about 8 a pass each).
            members: dict[str, bool] = {}
            for endpoint_id, endpoint in endpoints.items():
                endpoint["Id"] = endpoint_id
                members[endpoint_id] = run.member(endpoint)
            for match in found:
                member = members.get(match.endpoint_id)
                if member is None:
                    continue
                endpoint = endpoints[match.endpoint_id]
                if not member:
                    sends.append(CampaignSend(
                        match.endpoint_id, "FILTERED_OUT_BY_SEGMENT", None, now_ms, None, None,
                        match.event_id,
                    ))  # fmt: skip
                    continue
                send = self.scheduler.decide(
                    run, endpoint, now, sent_before, trigger=(match.event_id, match.at),
                    session_id=match.session_id,
                )  # fmt: skip
                sends.append(send)
                # Ready to send: counted, though the FILTER hook may yet drop it.
                if not isinstance(send, CampaignSend):
                    sent_before.setdefault(match.endpoint_id, []).append(
                        PastSend(send.at_ms, match.session_id)
                    )
            if sends:
                done = await self.scheduler.complete(run, sends, leased=False)
                await self.scheduler.commit(run.activity, done, cursor=None, owner=None, run=run)

    async def _run(self, campaign: _Campaign) -> Run | None:
        now = self.clock()
        if (
            campaign.run is not None
            and campaign.prepared is not None
            and now - campaign.prepared < MEMBERSHIP_TTL
        ):
            return campaign.run
        record = campaign.record
        created = datetime.fromisoformat(record.created_at.replace("Z", "+00:00"))
        activity = await self.scheduler.storage.event_activity(
            record.app_id, record.id, record.version,
            int(created.timestamp() * 1000), format_timestamp(now),
        )  # fmt: skip
        campaign.run = await self.scheduler.prepare(activity, record)
        campaign.prepared = now
        return campaign.run
