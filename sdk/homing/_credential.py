"""The endpoint's device credential: asked for once, kept in the state, sent beside the
ingest key on the push stream, the acks and uploads.

The ingest key is the same in every copy of the app, so it cannot tell one device from
another. Once the collector has issued this endpoint its credential, the endpoint's push
stream and acks need it, and only it (or an admin key) may change the endpoint's
Address, User, OptOut and ChannelType. Errors never leave here: without a credential,
the SDK works as it did before, with the ingest key alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import MutableMapping
from typing import Any

import httpx

logger = logging.getLogger("homing")

HEADER = "X-Homing-Device-Credential"
_KEY = "device_credential"
# What the collector answers on a push stream of an endpoint whose credential it no longer
# has (revoked by an admin, or the endpoint deleted): ask for a new one.
_GONE = "has no device credential"


class DeviceCredential:
    def __init__(self, *, url: str, state: MutableMapping[str, Any]) -> None:
        self.url = url  # CreateDeviceCredential of this endpoint
        self._state = state
        self._lock = threading.Lock()
        self._refused = False  # the collector will not issue one: not asked again this run
        # Read once, here, and kept in memory: every upload sends it, and the uploader's
        # thread must not open state tables, which close() may be releasing.
        try:
            secret = state.get(_KEY)
        except Exception:
            secret = None
        self._secret = secret if isinstance(secret, str) and secret else None

    def after_fork_in_child(self) -> None:
        # The parent's thread may have held the lock, asking: the child starts afresh.
        self._lock = threading.Lock()

    def headers(self) -> dict[str, str]:
        secret = self._secret
        return {HEADER: secret} if secret else {}

    def settle(self, timeout: float) -> None:
        """Wait, up to `timeout` seconds, for a request for the credential that another
        thread has in flight: the collector may have issued it already."""
        if self._lock.acquire(timeout=max(timeout, 0.0)):
            self._lock.release()

    def ensure(self, client: httpx.Client, headers: dict[str, str]) -> None:
        """Ask the collector for the credential if none is kept. Never raises."""
        with self._lock:
            if self._refused or self._secret is not None:
                return
            try:
                response = client.post(
                    self.url, headers=headers, timeout=httpx.Timeout(10.0, connect=5.0)
                )
            except httpx.HTTPError as exc:
                logger.info("homing: cannot ask for the device credential yet: %s", exc)
                return  # the next connection asks again
            if response.status_code == 201:
                try:
                    secret = response.json()["DeviceCredential"]
                except Exception:
                    secret = None
                if isinstance(secret, str) and secret:
                    self._secret = secret
                    try:
                        self._state[_KEY] = secret
                    except Exception:
                        logger.warning("homing: cannot keep the device credential", exc_info=True)
                    return
            if response.status_code in (429,) or response.status_code >= 500:
                return  # try again at the next connection
            # 409: the endpoint has one this device lost (an admin can revoke it); 404: a
            # collector without device credentials. Go on with the ingest key alone.
            self._refused = True
            logger.warning(
                "homing: the collector answered %d to the device credential request; "
                "going on without one",
                response.status_code,
            )

    def forget_if_gone(self, message: str) -> bool:
        """After a 403 on the push stream: if the collector no longer knows this device's
        credential, drop it so that the next connection asks for a new one."""
        if _GONE not in message or self._secret is None:
            return False
        with self._lock:
            self._secret = None
            self._refused = False
            try:
                del self._state[_KEY]
            except Exception:
                logger.warning("homing: cannot drop the device credential", exc_info=True)
        logger.info("homing: the collector dropped this device's credential; asking again")
        return True
