"""Device credentials: a secret bound to one endpoint of one application.

An ingest key ships inside every copy of an app, so it proves nothing about which device
calls. The first time the SDK registers its endpoint, it asks for a device credential
(CreateDeviceCredential) and keeps it; the collector stores only its SHA-256. From then
on, that endpoint's push stream and acks need the credential, sent as the
``X-Homing-Device-Credential`` header beside the ingest key (or an admin key), and the
bare ingest key can no longer change the fields that say where and to whom its pushes
go: `LOCKED_FIELDS`. An endpoint without a credential behaves as before.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.requests import Request

from homing.wire import WireError
from homing_collector.auth import Principal
from homing_collector.errors import forbidden
from homing_collector.operation import rank
from homing_collector.storage.base import DeviceCheck, Endpoint, EndpointMerge, Storage

HEADER = "X-Homing-Device-Credential"
LOCKED_FIELDS = ("Address", "ChannelType", "OptOut", "User")


class LockedField(WireError):
    """An update from a caller without the endpoint's credential would change a field
    that only the device (or an admin key) may change."""


def new_secret() -> str:
    return "hm_device_" + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def presented(request: Request) -> str | None:
    """The SHA-256 of the credential the request carries, if it carries one."""
    value = request.headers.get(HEADER, "").strip()
    return hash_secret(value) if value else None


def is_admin(principal: Principal) -> bool:
    return rank(principal.role) >= rank("admin")


@dataclass(frozen=True)
class Access:
    """What a caller may do to the endpoints of one request."""

    admin: bool
    presented: str | None  # the SHA-256 of the credential sent, if any
    stored: dict[str, str]  # endpoint id -> the SHA-256 of its credential, for those with one

    def proven(self, endpoint_id: str) -> bool:
        """Whether the caller may act as the device: an admin key, the endpoint's own
        credential, or an endpoint without one."""
        stored = self.stored.get(endpoint_id)
        if self.admin or stored is None:
            return True
        return self.presented is not None and hmac.compare_digest(stored, self.presented)

    def locked(self) -> frozenset[str]:
        """The endpoints whose `LOCKED_FIELDS` this caller may not change."""
        return frozenset(e for e in self.stored if not self.proven(e))


async def access(
    request: Request, principal: Principal, storage: Storage, app_id: str, endpoint_ids: Any
) -> Access:
    admin = is_admin(principal)
    stored = {} if admin else await storage.device_credentials(app_id, list(endpoint_ids))
    return Access(admin, presented(request), stored)


def check(
    request: Request, principal: Principal, endpoint_ids: Iterable[str]
) -> DeviceCheck | None:
    """What the request proves of its endpoints' credentials, for the write to check (the
    storage reads the stored ones where it is cheapest); None for an admin key, which
    needs none."""
    return None if is_admin(principal) else proof(presented(request), endpoint_ids)


def proof(sent: str | None, endpoint_ids: Iterable[str]) -> DeviceCheck:
    """The check of a caller that sent the credential whose SHA-256 is `sent` (None: none)
    and no admin key."""
    return DeviceCheck(list(endpoint_ids), partial(_locked, sent), _guard)


def _locked(sent: str | None, stored: dict[str, str]) -> frozenset[str]:
    return Access(False, sent, stored).locked()


def _guard(merge: EndpointMerge, locked: frozenset[str]) -> EndpointMerge:
    return partial(guarded_merge, merge, locked)


async def require(
    request: Request, principal: Principal, storage: Storage, app_id: str, endpoint_id: str
) -> str | None:
    """Raise 403 unless the caller may read or acknowledge the endpoint's pushes; return
    the SHA-256 of the credential the endpoint has (None: none, or an admin key), which a
    push stream checks again while it is open."""
    if is_admin(principal):
        return None
    stored = (await storage.device_credentials(app_id, [endpoint_id])).get(endpoint_id)
    sent = presented(request)
    if sent is not None and stored is None:
        raise forbidden(
            f"{HEADER}: endpoint {endpoint_id} has no device credential (it was revoked, "
            "or the endpoint deleted); ask for a new one with CreateDeviceCredential"
        )
    if stored is not None and (sent is None or not hmac.compare_digest(stored, sent)):
        raise forbidden(
            f"{HEADER}: endpoint {endpoint_id} has a device credential, and "
            + ("this is not it" if sent else "its push stream and acks need it")
            + "; or use an admin key"
        )
    return stored


def guarded_merge(
    merge: EndpointMerge,
    locked: frozenset[str],
    endpoint_id: str,
    existing: Endpoint | None,
    update: Endpoint,
) -> Endpoint:
    """`merge`, refusing a change to a locked endpoint's `LOCKED_FIELDS`. A module-level
    function, so that a partial of it can go to the events writer process."""
    merged = merge(endpoint_id, existing, update)
    if endpoint_id in locked and merged is not existing:
        # An endpoint claimed before it was stored: compare with a new one's defaults.
        before = existing if existing is not None else merge(endpoint_id, None, {})
        for name in LOCKED_FIELDS:
            if merged.get(name) != before.get(name):
                raise LockedField(
                    name,
                    f"endpoint {endpoint_id} has a device credential: only the device "
                    f"({HEADER}) or an admin key may change its {', '.join(LOCKED_FIELDS)}",
                )
    return merged
