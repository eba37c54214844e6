"""Secrets at rest: SigV4 secret access keys sealed with AES-256-GCM under a key file.

SigV4 needs each key's secret itself, so it cannot be stored as a hash the way bearer
tokens and device credentials are. With a secrets key file, the database holds each
secret sealed: ``v1:`` then the base64 of a random 12-byte nonce, the ciphertext and the
16-byte tag, with the access key id as associated data (a sealed secret copied onto
another key's row does not open). Without the key file, secrets are stored in clear, as
before; a clear secret is letters and digits only, so it never looks sealed.

The key file holds 32 random bytes on one line, in base64 (44 characters) or hex (64).
It must be readable by its owner alone, as ssh asks of a private key.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "v1"
KEY_BYTES = 32
_NONCE_BYTES = 12
# Sealed secrets are the only stored secrets with a colon; clear ones are alphanumeric.
_SEPARATOR = ":"


class SecretsKeyError(Exception):
    """The key file cannot be used, or a stored secret cannot be opened: one line that
    says what to do."""


class SecretsKey:
    """The key that seals the SigV4 secrets in the database.

    >>> key = SecretsKey(bytes(32))
    >>> stored = key.seal("wJalrXUtnFEMI", "HMA123")
    >>> key.open(stored, "HMA123")
    'wJalrXUtnFEMI'
    """

    def __init__(self, key: bytes, *, source: str = "the secrets key") -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a secrets key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self.source = source  # named in errors: the key file's path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SecretsKey:
        """Read a key file, refusing one that others may read or write."""
        try:
            with open(path, "rb") as file:
                mode = os.fstat(file.fileno()).st_mode
                text = file.read(1024).strip()
        except OSError as exc:
            raise SecretsKeyError(
                f"cannot read the secrets key file {path}: {exc.strerror or exc}"
            ) from None
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretsKeyError(
                f"the secrets key file {path} is open to others (mode "
                f"{stat.S_IMODE(mode):04o}); it must be its owner's alone: chmod 600 {path}"
            )
        return cls(_decode(text, path), source=str(path))

    def seal(self, secret: str, access_key_id: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), access_key_id.encode())
        return f"{VERSION}{_SEPARATOR}{base64.b64encode(nonce + sealed).decode()}"

    def open(self, stored: str, access_key_id: str) -> str:
        """The secret in `stored`, sealed or clear."""
        if not is_sealed(stored):
            return stored
        version, _, body = stored.partition(_SEPARATOR)
        if version != VERSION:
            raise SecretsKeyError(
                f"the secret of key {access_key_id} is sealed in format {version!r}, which "
                "this version of Homing cannot read"
            )
        try:
            raw = base64.b64decode(body, validate=True)
            return self._aead.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], access_key_id.encode()
            ).decode()
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretsKeyError(
                f"the secret of key {access_key_id} does not open with {self.source}: it was "
                "sealed with another key file, or the row was altered"
            ) from None


def is_sealed(stored: str) -> bool:
    return _SEPARATOR in stored


def new_key_text() -> str:
    """A fresh key, as a key file holds it."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n"


def store(secret: str, access_key_id: str, key: SecretsKey | None) -> str:
    """What the database keeps of a new secret: sealed with `key`, else clear."""
    return secret if key is None else key.seal(secret, access_key_id)


def reveal(stored: str, access_key_id: str, key: SecretsKey | None) -> str:
    """The secret itself, from what the database keeps."""
    if key is not None:
        return key.open(stored, access_key_id)
    if is_sealed(stored):
        raise SecretsKeyError(
            f"the secret of key {access_key_id} is sealed, and no secrets key file was given"
        )
    return stored


def check(stored: Iterable[tuple[str, str]], key: SecretsKey | None) -> int:
    """Make sure that every stored secret, (access key id, stored form), opens with `key`
    (None: none is sealed); return how many are still in clear."""
    clear = 0
    for access_key_id, secret in stored:
        if not is_sealed(secret):
            clear += 1
        elif key is None:
            raise SecretsKeyError(
                "the database holds sealed secret access keys: give the secrets key file "
                "that sealed them (--secrets-key-file or HOMING_SECRETS_KEY_FILE)"
            )
        else:
            key.open(secret, access_key_id)
    return clear


def _decode(text: bytes, path: str | os.PathLike[str]) -> bytes:
    try:
        if len(text) == 2 * KEY_BYTES:
            key = bytes.fromhex(text.decode("ascii"))
        else:
            key = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != KEY_BYTES:
        raise SecretsKeyError(
            f"the secrets key file {path} must hold {KEY_BYTES} random bytes on one line, in "
            f"base64 or hex; make one with: homing-collector secrets new-key {Path(path)}"
        )
    return key
