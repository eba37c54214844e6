"""Standard Webhooks signatures: per-application secrets, rotation, signed headers.

Every outgoing call carries `webhook-id` (stable across retries, the receiver's
idempotency key), `webhook-timestamp` (Unix seconds of this attempt) and
`webhook-signature`, a space-separated list of `v1,<base64 HMAC-SHA256>` over
`{id}.{timestamp}.{body}`. During a rotation both the new and the previous secret sign,
so a receiver holding either verifies every call.
"""

from __future__ import annotations

import base64
import binascii
import random
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone

from standardwebhooks import Webhook

from homing_collector.hooks.errors import SecretError

SECRET_PREFIX = "whsec_"
# The spec asks for 24 to 64 random bytes; 32 matches the HMAC-SHA256 block's key size.
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def new_secret() -> str:
    """A fresh random secret in the `whsec_<base64>` form receivers' libraries take.

    >>> new_secret().startswith("whsec_")
    True
    """
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_secret(secret: str, field_name: str = "secret") -> bytes:
    """Return the key bytes of a `whsec_` secret; raise SecretError naming the rule."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise SecretError(f"{field_name}: must be a string starting with {SECRET_PREFIX!r}")
    text = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise SecretError(
            f"{field_name}: the part after {SECRET_PREFIX!r} must be base64"
        ) from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise SecretError(
            f"{field_name}: holds {len(key)} bytes; a secret must hold "
            f"{MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes (new_secret() makes one)"
        )
    return key


def new_message_id() -> str:
    """A `webhook-id`: made once per message and kept for all its attempts. Its 128 bits
    are from `random`, as a UUID4's hex: an id must be unique, not secret, and os.urandom
    gives up the GIL, in the storage's writer thread in the middle of a transaction (the
    custom channel's calls are made as a campaign's sends are committed)."""
    return f"msg_{random.getrandbits(128):032x}"


@dataclass(frozen=True)
class SigningKeys:
    """An application's secrets: the current one, and the previous one while a rotation
    lasts. Both sign, so receivers can switch to the new secret at their own pace.

    >>> keys = SigningKeys(new_secret())
    >>> rotated = keys.rotate()
    >>> rotated.previous == keys.current
    True
    """

    current: str
    previous: str | None = None
    _signers: tuple[Webhook, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = [check_secret(self.current, "current")]
        if self.previous is not None:
            keys.append(check_secret(self.previous, "previous"))
        object.__setattr__(self, "_signers", tuple(Webhook(key) for key in keys))

    def rotate(self, new: str | None = None) -> SigningKeys:
        """Start a rotation: `new` (or a fresh secret) signs beside the current one."""
        return SigningKeys(new_secret() if new is None else new, previous=self.current)

    def end_rotation(self) -> SigningKeys:
        """Stop signing with the previous secret, once every receiver has the new one."""
        return SigningKeys(self.current)

    def signature(self, msg_id: str, timestamp: datetime, body: bytes) -> str:
        """The `webhook-signature` header: one `v1,` signature per secret."""
        return " ".join(signer.sign(msg_id, _utc(timestamp), body) for signer in self._signers)

    def headers(self, msg_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers for one attempt of one message."""
        if not msg_id or "." in msg_id:
            # The signed content is "{id}.{timestamp}.{body}": a dot would make it ambiguous.
            raise ValueError(f"webhook-id: must be non-empty and hold no '.', not {msg_id!r}")
        moment = _utc(timestamp)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": self.signature(msg_id, moment, body),
        }


def _utc(moment: datetime) -> datetime:
    # standardwebhooks before 1.3 read any datetime's fields as UTC (its issue #251), so it
    # is given UTC only; a naive time is refused rather than guessed.
    if moment.tzinfo is None:
        raise ValueError("timestamp: must be timezone-aware, e.g. datetime.now(timezone.utc)")
    return moment.astimezone(timezone.utc)
