"""The durable scheduler: it plans each campaign's runs as activities in the database,
and runs them, one lease-holding process per activity, through the push gateway.

Every collector process (each of `serve --workers`) runs one. Each tick it:

1. plans: for each campaign with runs left, the runs due since it last looked
   (`schedule.runs_between`) become activities, once whoever plans them. Of several runs
   due at once (the collector was down), only the last is run; the others, and a last
   one already past `MaximumDuration`, are recorded as missed (CANCELLED, MISSED). A
   paused campaign's runs are skipped.
2. claims a due activity whose lease is free, expired, or held by a process of this host
   that is gone, and walks the segment a chunk at a time. The endpoints of a chunk that
   are to be sent now go to the campaign's FILTER hook first, if it has one, in batches
   of 50 (channels.py), and become pushes or calls to their treatment's custom channel.
   Each chunk's send records, pushes, custom-channel calls (outbox rows),
   `_campaign.send` events, counts and cursor are one transaction, which also renews
   the lease: after a kill -9, the next holder resumes after the last chunk, and no
   endpoint is sent a run's message twice.

Endpoints that quiet time holds back are recorded as DEFERRED and sent by a later pass
of the same activity when their time comes. No SQL here: it reads and writes through the
storage protocol, and decides each endpoint with the campaign engine's pure modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import orjson

from homing.wire import format_timestamp
from homing_collector.hooks.campaign import CampaignHooks, stored_keys
from homing_collector.hooks.errors import HookResponseError
from homing_collector.hooks.payloads import CampaignRun
from homing_collector.lifetime import stop, wait_set
from homing_collector.push.gateway import Gateway
from homing_collector.push.messages import Override, Push, SendRequest, render
from homing_collector.storage.base import (
    ActivityRecord,
    CampaignRecord,
    CampaignSend,
    Endpoint,
    EventRow,
    NewDelivery,
    PastSend,
    PushMessage,
    QueuedPush,
    Storage,
)

from . import templates
from .campaign_shapes import (
    CampaignLimits,
    Message,
    MessageConfiguration,
    QuietTime,
    Schedule,
    WriteApplicationSettingsRequest,
    WriteCampaignRequest,
)
from .channels import (
    FILTER_HOOK_FAILED,
    FILTERED_OUT_BY_HOOK,
    CustomChannel,
    custom_channel,
    definition,
    delivery_configuration,
    effective_hook,
    filter_url,
    message_configuration,
    unique_batches,
)
from .decode import convert
from .delivery import CAMPAIGN_SEND, Send, plan
from .limits import TokenBucket, cap_reason, effective_limits, sent_in_last_day
from .resolve import SegmentResolutionError, segment_predicate
from .schedule import local_spread, next_run, runs_between
from .treatments import assign
from .triggers import SEND_WINDOW, Triggers

logger = logging.getLogger("homing_collector")

Clock = Callable[[], datetime]

TICK = 0.5  # seconds between two looks at the schedule
LEASE = timedelta(seconds=10)  # renewed by every chunk; a holder silent this long is gone
CHUNK = 1000  # endpoints walked per transaction
WALKED = "\U0010ffff"  # the cursor of a finished walk: after every endpoint id
# Channels a push cannot reach: only a custom channel sends to them.
NOT_PUSH = frozenset({"EMAIL", "SMS", "VOICE", "IN_APP"})
_OPEN_MS = 1000  # a message due this close to now goes now
_ID_MARK = "M" * 36  # stands for a message id in a `_campaign.send` event's JSON
# FILTER hook calls in flight at once for one run: a slow hook holds only its own run.
FILTER_CONCURRENCY = 4


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _uuid4() -> str:
    """A random UUID4, as str(uuid.uuid4()) gives, but from `random`: a message id must be
    unique, not secret, and os.urandom gives up the GIL, after which the event loop (where
    event-triggered sends are made) may wait for the storage's writer thread to hand it
    back (as app._request_id)."""
    bits = random.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48)
    hex_ = f"{bits | (0x4000 << 64) | (0x8000 << 48):032x}"
    return f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-{hex_[20:]}"


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Run:
    """What running one activity (or answering one event campaign's events) needs, read
    once."""

    activity: ActivityRecord
    request: WriteCampaignRequest
    limits: CampaignLimits
    quiet: QuietTime | None
    member: Callable[[Endpoint], bool]
    sizes: list[int]
    bucket: TokenBucket | None
    # Treatment id -> its push sections and schedule; (treatment, channel) -> the push.
    treatments: dict[str, tuple[SendRequest, Schedule]] = field(default_factory=dict)
    pushes: dict[tuple[str, Any], Push] = field(default_factory=dict)
    addresses: dict[tuple[Any, str], str] = field(default_factory=dict)
    # Treatment id -> its custom channel, if it has one, and its MessageConfiguration as
    # the FILTER hook gets it; the FILTER hook's URL, if the campaign has one.
    channels: dict[str, CustomChannel | None] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    filter_url: str | None = None

    def hook_run(self, treatment: str) -> CampaignRun:
        """The run as the hooks' payloads name it."""
        a = self.activity
        return CampaignRun(a.app_id, a.campaign_id, a.id, a.scheduled_ms / 1000, treatment)

    def push(self, treatment: str, channel: Any) -> tuple[Push, Schedule]:
        request, schedule = self.treatments[treatment]
        key = (treatment, channel)
        found = self.pushes.get(key)
        if found is None:
            found = self.pushes[key] = request.push_for(
                channel if isinstance(channel, str) else None
            )
        return found, schedule


class Ready(NamedTuple):
    """An endpoint this run sends to now, once the FILTER hook (if any) keeps it: by push,
    or through its treatment's custom channel when `push` is None. A named tuple, as
    CampaignSend is: one is made per endpoint sent to."""

    endpoint: Endpoint
    treatment: str
    push: Push | None
    at_ms: int
    trigger: str | None = None
    session_id: str | None = None


Decision = CampaignSend | Ready


class Scheduler:
    def __init__(
        self,
        storage: Storage,
        gateway: Gateway,
        *,
        clock: Clock = utc_now,
        tick: float = TICK,
        lease: timedelta = LEASE,
        hooks: CampaignHooks | None = None,
        trigger_window: float = SEND_WINDOW,
    ) -> None:
        self.storage = storage
        self.gateway = gateway
        self.hooks = hooks or CampaignHooks(stored_keys(storage))
        self.clock = clock
        self.tick = tick
        self.lease = lease
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{secrets.token_hex(4)}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.triggers = Triggers(self, clock, window=trigger_window)
        self._stamped: tuple[int, str] = (-1, "")
        # The `_campaign.send` event of a custom channel's send, but for its message id,
        # as the last one made: (activity id, treatment, now_ms), and the JSON around it.
        self._custom_event: tuple[tuple[str, str, int] | None, bytes, bytes] = (None, b"", b"")

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await self.triggers.start()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        await self.triggers.close()
        await stop(self._task)
        self._task = None
        await self.hooks.close()

    def wake(self) -> None:
        """Look at the schedule now: a campaign was written."""
        self._wake.set()

    async def _loop(self) -> None:
        try:
            await self.plan()  # builds the event filters that recovery matches with
            await self.triggers.recover()
        except Exception:
            logger.exception("Event-triggered campaigns could not look back at recent events")
        while True:
            try:
                await self.run_once()
            except Exception:
                logger.exception("The campaign scheduler failed; it tries again in %s s", self.tick)
            await wait_set(self._wake, self.tick)
            self._wake.clear()

    async def run_once(self) -> int:
        """Plan what is due, then run every activity this process can claim; return how
        many it ran (or advanced)."""
        await self.plan()
        ran = 0
        while True:
            now = self.clock()
            activity = await self.storage.claim_activity(
                self.owner, _ms(now), int(self.lease.total_seconds() * 1000), dead=self.dead
            )
            if activity is None:
                return ran
            await self.run(activity)
            ran += 1

    def dead(self, holder: str) -> bool:
        """Whether a lease holder is a process of this host that is gone (or an earlier
        process of this one's id). Holders on other hosts wait for their lease to expire."""
        parts = holder.rsplit(":", 2)
        if len(parts) != 3 or parts[0] != self.host or not parts[1].isdigit():
            return False
        pid = int(parts[1])
        if pid == os.getpid():
            return holder != self.owner
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False

    # -- planning ----------------------------------------------------------------------

    async def plan(self) -> None:
        now = self.clock()
        settings: dict[str, WriteApplicationSettingsRequest] = {}
        event_campaigns = []
        for record, planned_ms in await self.storage.campaigns_to_plan():
            try:
                request = convert(orjson.loads(record.request), WriteCampaignRequest)
            except Exception:
                logger.exception("Campaign %s cannot be read; it is not planned", record.id)
                continue
            schedule = request.Schedule
            if schedule is not None and schedule.Frequency == "EVENT":
                event_campaigns.append((record, request))
                continue
            if schedule is None:
                continue
            created = _parse(record.created_at)
            after = (
                _moment(planned_ms)
                if planned_ms is not None
                else created - timedelta(milliseconds=1)
            )
            # A local-time run starts as soon as the first zone's clocks read its time.
            lead, trail = local_spread(schedule)
            horizon = now + lead
            runs = runs_between(schedule, after, horizon, created=created)
            finished = next_run(schedule, horizon, created=created) is None
            if not runs and not finished:
                continue
            if record.app_id not in settings:
                settings[record.app_id] = await self._settings(record.app_id)
            limits = effective_limits(request.Limits, settings[record.app_id].Limits)
            due: list[int] = []
            missed = [_ms(run) for run in runs]
            if runs and not request.IsPaused:
                last = runs[-1]
                late = limits.MaximumDuration is not None and now > last + trail + timedelta(
                    seconds=limits.MaximumDuration
                )
                if not late:
                    due = [missed.pop()]
            if request.IsPaused:
                missed = []  # a paused campaign skips its runs
            await self.storage.plan_runs(
                record.app_id, record.id, record.version, due, missed, _ms(horizon), finished,
                lead_ms=_ms(horizon) - _ms(now),
            )  # fmt: skip
        self.triggers.refresh(event_campaigns)

    async def _settings(self, app_id: str) -> WriteApplicationSettingsRequest:
        stored = await self.storage.get_app_settings(app_id)
        if stored is None:
            return WriteApplicationSettingsRequest()
        return convert(orjson.loads(stored[0]), WriteApplicationSettingsRequest)

    # -- running -----------------------------------------------------------------------

    async def run(self, activity: ActivityRecord) -> None:
        record = await self.storage.get_campaign(
            activity.app_id, activity.campaign_id, activity.version
        )
        if record is None:
            return  # deleted: its activities are gone with it
        run = await self.prepare(activity, record)
        if run is None:
            # Its segment is gone (or based on one that is): nothing can be sent.
            await self.storage.finish_activity(
                activity, self.owner, not_before_ms=None, now=self._stamp(), result="FAIL"
            )
            return
        # Endpoints held back by quiet time whose time has come, then the segment walk.
        if not await self._deferred(run):
            return
        cursor = activity.cursor
        # A chunk is read and decided while the one before is being committed: the writer
        # thread and this loop work side by side (bench/campaigns.py).
        pending: asyncio.Future[bool] | None = None
        while cursor != WALKED:
            chunk = CHUNK if run.bucket is None else max(1, min(CHUNK, int(run.bucket.rate)))
            rows = await self.storage.endpoints_after(activity.app_id, after=cursor, limit=chunk)
            members = []
            for endpoint_id, endpoint in rows:
                endpoint["Id"] = endpoint_id
                if run.member(endpoint):
                    members.append(endpoint)
            cursor = rows[-1][0] if len(rows) == chunk else WALKED
            sends = await self._decided(run, members)
            if pending is not None and not await pending:
                return
            pending = asyncio.ensure_future(self._commit_run(run, sends, cursor))
        if pending is not None and not await pending:
            return
        if not await self._deferred(run):
            return
        _, later = await self.storage.deferred_sends(
            activity.app_id, activity.campaign_id, activity.id,
            now_ms=_ms(self.clock()), limit=0,
        )  # fmt: skip
        await self.storage.finish_activity(
            activity, self.owner, not_before_ms=later, now=self._stamp()
        )

    async def prepare(self, activity: ActivityRecord, record: CampaignRecord) -> Run | None:
        request = convert(orjson.loads(record.request), WriteCampaignRequest)
        app = await self._settings(activity.app_id)
        schedule = request.Schedule or Schedule(StartTime="IMMEDIATE")
        try:
            member = await segment_predicate(
                self.storage, activity.app_id, record.segment_id, request.SegmentVersion,
                now=self.clock(),
            )  # fmt: skip
        except SegmentResolutionError:
            logger.warning("Campaign %s: its segment cannot be resolved", activity.campaign_id)
            return None
        limits = effective_limits(request.Limits, app.Limits)
        rate = limits.MessagesPerSecond
        hook = effective_hook(request.Hook, app.CampaignHook)
        treatments = {}
        channels = {}
        configs = {}
        for index in range(len(request.AdditionalTreatments or []) + 1):
            config, own = _treatment(request, str(index))
            treatments[str(index)] = (_push_request(config), own)
            channels[str(index)] = custom_channel(
                config, delivery_configuration(request, str(index)), hook
            )
            configs[str(index)] = message_configuration(config)
        return Run(
            activity=activity,
            request=request,
            limits=limits,
            quiet=schedule.QuietTime or app.QuietTime,
            member=member,
            sizes=[t.SizePercent for t in request.AdditionalTreatments or []],
            bucket=None if rate is None else TokenBucket(rate),
            treatments=treatments,
            channels=channels,
            configs=configs,
            filter_url=filter_url(hook),
        )

    async def _deferred(self, run: Run) -> bool:
        a = run.activity
        while True:
            ids, _ = await self.storage.deferred_sends(
                a.app_id, a.campaign_id, a.id, now_ms=_ms(self.clock()), limit=CHUNK
            )
            if not ids:
                return True
            found = await self.storage.get_endpoints(a.app_id, ids)
            endpoints = []
            for endpoint_id in ids:
                endpoint = found.get(endpoint_id)
                if endpoint is None:  # deleted since: nothing to send it
                    endpoint = {"Id": endpoint_id, "EndpointStatus": "INACTIVE"}
                endpoint["Id"] = endpoint_id
                endpoints.append(endpoint)
            if not await self._write(run, endpoints, None):
                return False

    async def _write(self, run: Run, endpoints: list[Endpoint], cursor: str | None) -> bool:
        return await self._commit_run(run, await self._decided(run, endpoints), cursor)

    async def _decided(self, run: Run, endpoints: list[Endpoint]) -> list[CampaignSend]:
        now = self.clock()
        sent_before = await self.sent_before(run, [e["Id"] for e in endpoints])
        decisions = [self.decide(run, endpoint, now, sent_before) for endpoint in endpoints]
        sends = await self.complete(run, decisions, leased=True)
        if run.bucket is not None:
            wait = run.bucket.take(sum(1 for s in sends if s.status == "SENT"))
            if wait:
                await asyncio.sleep(wait)
        return sends

    async def complete(
        self, run: Run, decisions: list[Decision], *, leased: bool
    ) -> list[CampaignSend]:
        """The sends of `decisions`: the endpoints ready to be sent are put to the FILTER
        hook, if the campaign has one, and those it keeps become messages. `leased`: the
        run holds a lease, renewed while the hook takes its time."""
        ready = [d for d in decisions if isinstance(d, Ready)]
        if ready and run.filter_url is not None:
            renewing = asyncio.ensure_future(self._renew_lease(run)) if leased else None
            try:
                filtered = await self._filtered(run, run.filter_url, ready)
            finally:
                if renewing is not None:
                    renewing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await renewing
            kept = iter(filtered)
            decisions = [next(kept) if isinstance(d, Ready) else d for d in decisions]
        return [d if isinstance(d, CampaignSend) else self._send(run, d) for d in decisions]

    async def _filtered(self, run: Run, url: str, ready: list[Ready]) -> list[Decision]:
        """Each of `ready`, in order, as the FILTER hook at `url` answered for it: kept
        (with the endpoint it returned), or a skip."""
        slots = asyncio.Semaphore(FILTER_CONCURRENCY)
        results: dict[int, Decision] = {}

        async def ask(treatment: str, batch: list[tuple[int, Ready]]) -> None:
            sent = {r.endpoint["Id"]: definition(r.endpoint) for _, r in batch}
            try:
                async with slots:
                    kept = await self.hooks.filter(
                        url, run.hook_run(treatment), run.configs[treatment], sent
                    )
            except Exception as exc:  # whatever it was, the batch fails and is counted
                logger.warning(
                    "Campaign %s: its FILTER hook failed a batch of %d endpoints: %s",
                    run.activity.campaign_id, len(batch), exc,
                    exc_info=not isinstance(exc, HookResponseError),
                )  # fmt: skip
                for index, r in batch:
                    results[index] = _skip(r, FILTER_HOOK_FAILED)
                return
            for index, r in batch:
                endpoint_id = r.endpoint["Id"]
                changed = kept.get(endpoint_id)
                if changed is None:
                    results[index] = _skip(r, FILTERED_OUT_BY_HOOK)
                else:
                    results[index] = r._replace(endpoint={**changed, "Id": endpoint_id})

        by_treatment: dict[str, list[tuple[int, Ready]]] = {}
        for index, r in enumerate(ready):
            by_treatment.setdefault(r.treatment, []).append((index, r))
        await asyncio.gather(
            *(ask(treatment, batch)
              for treatment, items in by_treatment.items()
              for batch in unique_batches(items, lambda item: item[1].endpoint["Id"]))
        )  # fmt: skip
        return [results[index] for index in range(len(ready))]

    async def _renew_lease(self, run: Run) -> None:
        """Keep the run's lease while it waits for its FILTER hook (up to 3 attempts of
        15 s a batch), so that no other process takes the activity meanwhile."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            if not await self.commit(run.activity, [], cursor=None, owner=self.owner):
                return

    def _send(self, run: Run, ready: Ready) -> CampaignSend:
        # The send is made whole at once, trigger and session too: a copy (_replace) cost
        # more than making it.
        if ready.push is None:
            return self._custom(run, ready)
        return self._message(run, ready, ready.push)

    async def _commit_run(self, run: Run, sends: list[CampaignSend], cursor: str | None) -> bool:
        if not await self.commit(run.activity, sends, cursor=cursor, owner=self.owner, run=run):
            logger.warning("Campaign activity %s: its lease was lost; stopping", run.activity.id)
            return False
        return True

    async def sent_before(self, run: Run, endpoint_ids: list[str]) -> Mapping[str, list[PastSend]]:
        """When (and in which session) each endpoint was sent the campaign before, if a
        cap needs it."""
        if not endpoint_ids or not (run.limits.Daily or run.limits.Total or run.limits.Session):
            return {}
        a = run.activity
        return await self.storage.campaign_sends(a.app_id, a.campaign_id, endpoint_ids)

    async def commit(
        self,
        activity: ActivityRecord,
        sends: list[CampaignSend],
        *,
        cursor: str | None,
        owner: str | None,
        run: Run | None = None,
    ) -> bool:
        """Store the sends, with the custom channel's deliveries of `run`, and hand their
        pushes to the streams; False if the lease was lost (nothing was stored)."""
        custom = None
        if run is not None and any(s.custom is not None for s in sends):
            custom = self._deliveries(run)
        written = await self.storage.write_campaign_chunk(
            activity, owner, sends, cursor=cursor,
            lease_until_ms=_ms(self.clock() + self.lease),
            queue_limit=self.gateway.queue_limit, custom=custom,
        )  # fmt: skip
        if not written.lease_held:
            return False
        if custom is not None:
            self.hooks.wake()
        # No await from here on: streams must hear of messages in commit order.
        self.gateway.metrics.push["queued"] += len(written.queued)
        for message, seq in written.queued:
            item = QueuedPush(seq, message.payload, message.expires_at)
            self.gateway.offer(activity.app_id, message.endpoint_id, item)
        return True

    def decide(
        self,
        run: Run,
        endpoint: Endpoint,
        now: datetime,
        sent_before: Mapping[str, list[PastSend]],
        *,
        trigger: tuple[str, datetime] | None = None,
        session_id: str | None = None,
    ) -> Decision:
        """What this run does for one endpoint of its segment: a skip or a deferral, or
        Ready to send (`complete` makes the message); for an event-triggered campaign,
        `trigger` is the event's id and when it came, and `session_id` the session the
        event came in (None: none, which the Session limit does not cap)."""
        a = run.activity
        endpoint_id: str = endpoint["Id"]
        now_ms = _ms(now)
        event_id = None if trigger is None else trigger[0]

        def skip(reason: str, treatment: str | None = None) -> CampaignSend:
            return CampaignSend(
                endpoint_id, reason, treatment, now_ms, trigger=event_id, session_id=session_id
            )

        if endpoint.get("EndpointStatus") == "INACTIVE":
            return skip("ENDPOINT_INACTIVE")
        channel = endpoint.get("ChannelType")
        # A custom channel reaches e-mail, SMS and the rest; without one, a push cannot.
        if channel in NOT_PUSH and not any(run.channels.values()):
            return skip("ENDPOINT_CHANNEL_MISMATCH")
        treatment = assign(
            a.campaign_id, endpoint_id,
            holdout_percent=run.request.HoldoutPercent or 0, sizes=run.sizes,
        )  # fmt: skip
        if treatment is None:
            return skip("TREATMENT_HOLDOUT")
        custom = run.channels.get(treatment)
        push: Push | None = None
        if custom is not None and custom.takes(channel):
            schedule = run.treatments[treatment][1]
        elif channel in NOT_PUSH or (custom is not None and custom.only):
            return skip("ENDPOINT_CHANNEL_MISMATCH", treatment)
        else:
            push, schedule = run.push(treatment, channel)
        silent = push is not None and bool(push.silent)
        if endpoint.get("OptOut") == "ALL" and not silent:
            return skip("ENDPOINT_OPT_OUT", treatment)
        address = endpoint.get("Address")
        if isinstance(address, str) and address:
            first = run.addresses.setdefault((channel, address), endpoint_id)
            if first != endpoint_id:
                return skip("DUPLICATE_ENDPOINT", treatment)
        if run.limits.Daily or run.limits.Total or run.limits.Session:
            before = sent_before.get(endpoint_id, [])
            moments = [_moment(sent.at_ms) for sent in before]
            in_session = (
                None if session_id is None
                else sum(1 for sent in before if sent.session_id == session_id)
            )  # fmt: skip
            reason = cap_reason(
                run.limits, last_day=sent_in_last_day(moments, now), total=len(before),
                in_session=in_session,
            )  # fmt: skip
            if reason is not None:
                return skip(reason, treatment)
        demographic = endpoint.get("Demographic")
        zone = demographic.get("Timezone") if isinstance(demographic, dict) else None
        when = plan(
            run=_moment(a.scheduled_ms) if trigger is None else trigger[1],
            schedule=schedule, quiet=run.quiet,
            endpoint_timezone=zone, maximum_duration=run.limits.MaximumDuration, now=now,
        )  # fmt: skip
        if not isinstance(when, Send):
            return skip(when.reason, treatment)
        at_ms = _ms(when.at)
        if at_ms > now_ms + _OPEN_MS:
            if trigger is not None:
                # Quiet time ends within the event's five minutes: sent then would be as
                # good, but the event answers once, now (docs/campaigns.md).
                return skip("QUIET_TIME", treatment)
            return CampaignSend(endpoint_id, "DEFERRED", treatment, at_ms)
        return Ready(endpoint, treatment, push, now_ms, event_id, session_id)

    def _message(self, run: Run, ready: Ready, push: Push) -> CampaignSend:
        a = run.activity
        endpoint, treatment, now_ms = ready.endpoint, ready.treatment, ready.at_ms
        endpoint_id: str = endpoint["Id"]
        # A FILTER hook may give an endpoint its own title or body (Pinpoint's overrides).
        title, body = endpoint.get("TitleOverride"), endpoint.get("BodyOverride")
        title = title if isinstance(title, str) else push.title
        body = body if isinstance(body, str) else push.body
        filled = Push(
            title=None if title is None else templates.fill(title, endpoint),
            body=None if body is None else templates.fill(body, endpoint),
            action=push.action,
            url=None if push.url is None else templates.fill(push.url, endpoint),
            data={k: templates.fill(v, endpoint) for k, v in push.data.items()},
            silent=push.silent,
            ttl=push.ttl,
        )
        context = {
            "campaign_id": a.campaign_id,
            "campaign_activity_id": a.id,
            "treatment_id": treatment,
        }
        message_id = _uuid4()
        ttl = self.gateway.default_ttl if filled.ttl is None else filled.ttl
        expires_at = now_ms + max(ttl, 1) * 1000
        payload, campaign_id = render(
            filled, Override(), context, message_id=message_id, expires_at_ms=expires_at
        )
        message = PushMessage(
            endpoint_id, message_id, bool(filled.silent), payload, campaign_id, expires_at
        )
        event = {
            "EventType": CAMPAIGN_SEND,
            "Timestamp": self._event_stamp(now_ms),
            "Attributes": {
                **context,
                "delivery_type": "PUSH",
                "campaign_send_status": "SUCCESS",
                "message_id": message_id,
            },
        }
        row = EventRow(
            endpoint_id, message_id, CAMPAIGN_SEND, now_ms, now_ms, None, orjson.dumps(event)
        )
        return CampaignSend(
            endpoint_id, "SENT", treatment, now_ms, message, row, ready.trigger, ready.session_id
        )

    def _custom(self, run: Run, ready: Ready) -> CampaignSend:
        """A send through the treatment's custom channel: its delivery is made with the
        others of its chunk when the chunk is committed (`_deliveries`)."""
        a = run.activity
        endpoint, treatment, now_ms = ready.endpoint, ready.treatment, ready.at_ms
        endpoint_id: str = endpoint["Id"]
        event_id = _uuid4()
        # The event's JSON is the same for every send of the pass but for its message id:
        # made once, it is filled in (a UUID needs no escaping).
        key = (a.id, treatment, now_ms)
        if self._custom_event[0] != key:
            event = {
                "EventType": CAMPAIGN_SEND,
                "Timestamp": self._event_stamp(now_ms),
                "Attributes": {
                    "campaign_id": a.campaign_id,
                    "campaign_activity_id": a.id,
                    "treatment_id": treatment,
                    "delivery_type": "CUSTOM",
                    "campaign_send_status": "SUCCESS",
                    "message_id": _ID_MARK,
                },
            }
            head, tail = orjson.dumps(event).split(_ID_MARK.encode())
            self._custom_event = (key, head, tail)
        _, head, tail = self._custom_event
        row = EventRow(
            endpoint_id, event_id, CAMPAIGN_SEND, now_ms, now_ms, None,
            head + event_id.encode() + tail,
        )  # fmt: skip
        # The endpoint as it is, "Id" and all: the chunk's deliveries make its definition
        # (`_deliveries`), in the storage's writer thread.
        return CampaignSend(
            endpoint_id, "SENT", treatment, now_ms, None, row, ready.trigger, ready.session_id,
            endpoint,
        )  # fmt: skip

    def _deliveries(self, run: Run) -> Callable[[Sequence[CampaignSend]], list[NewDelivery]]:
        """What the storage runs, in the chunk's transaction, on the custom-channel sends
        it recorded: their calls to each treatment's channel, at most 50 endpoints each."""

        def make(sends: Sequence[CampaignSend]) -> list[NewDelivery]:
            by_treatment: dict[str, list[CampaignSend]] = {}
            for send in sends:
                by_treatment.setdefault(send.treatment_id or "0", []).append(send)
            deliveries = []
            for treatment, found in by_treatment.items():
                channel = run.channels.get(treatment)
                if channel is None:
                    continue  # not made by this run: decide() sends nothing else this way
                for batch in unique_batches(found, lambda send: send.endpoint_id):
                    endpoints = {send.endpoint_id: definition(send.custom or {}) for send in batch}
                    deliveries += self.hooks.deliveries(
                        channel.url, run.hook_run(treatment), channel.data, endpoints
                    )
            return deliveries

        return make

    def _stamp(self) -> str:
        return format_timestamp(self.clock())

    def _event_stamp(self, now_ms: int) -> str:
        """The `_campaign.send` event's Timestamp: the sends of a pass share their `now`,
        so the last one formatted is kept."""
        if now_ms != self._stamped[0]:
            self._stamped = (now_ms, format_timestamp(now_ms / 1000))
        return self._stamped[1]


def _skip(ready: Ready, reason: str) -> CampaignSend:
    return CampaignSend(
        ready.endpoint["Id"], reason, ready.treatment, ready.at_ms, trigger=ready.trigger,
        session_id=ready.session_id,
    )  # fmt: skip


def _treatment(
    request: WriteCampaignRequest, treatment: str
) -> tuple[MessageConfiguration | None, Schedule]:
    """A treatment's message and schedule: its own, else the campaign's."""
    schedule = request.Schedule or Schedule(StartTime="IMMEDIATE")
    if treatment == "0":
        return request.MessageConfiguration, schedule
    chosen = (request.AdditionalTreatments or [])[int(treatment) - 1]
    return (
        chosen.MessageConfiguration or request.MessageConfiguration,
        chosen.Schedule or schedule,
    )


def _section(message: Message | None) -> Push | None:
    if message is None:
        return None
    data: dict[str, str] = {}
    if message.JsonBody is not None:
        data["jsonBody"] = message.JsonBody
    for name, key in (("ImageUrl", "pinpoint.notification.imageUrl"),
                      ("ImageIconUrl", "pinpoint.notification.imageIconUrl"),
                      ("ImageSmallIconUrl", "pinpoint.notification.imageSmallIconUrl"),
                      ("MediaUrl", "pinpoint.notification.mediaUrl")):  # fmt: skip
        value = getattr(message, name)
        if value is not None:
            data[key] = value
    return Push(
        title=message.Title,
        body=message.Body,
        action=message.Action,
        url=message.Url,
        data=data,
        silent=message.SilentPush,
        ttl=message.TimeToLive,
    )


def _push_request(config: MessageConfiguration | None) -> SendRequest:
    """A treatment's push sections as the push gateway's request."""
    if config is None:
        return SendRequest(None, None, None, {}, {})
    return SendRequest(
        _section(config.DefaultMessage), _section(config.GCMMessage),
        _section(config.APNSMessage), {}, {},
    )  # fmt: skip
