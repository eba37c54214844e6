"""Who is calling, and what they may do.

Two ways to authenticate, one set of roles:

- AWS Signature Version 4, service ``mobiletargeting``, any region, at most 15 minutes of
  clock skew. This is what boto3, the AWS CLI and the AWS SDKs send.
- ``Authorization: Bearer <token>``, which the Homing SDK and curl send.

Roles are ordered ingest < admin < root. Each operation in the route table declares the
least role that may call it; a key may call it when its role is at least that. Ingest and
admin keys act on their own application only, a root key on every application.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import posixpath
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote, unquote

from starlette.requests import Request

from homing_collector import sealing
from homing_collector.errors import PinpointError, forbidden
from homing_collector.operation import ROLES, Operation, rank
from homing_collector.sealing import SecretsKey, SecretsKeyError
from homing_collector.storage.base import KeyRecord, Storage

logger = logging.getLogger("homing_collector")

SIGNING_SERVICE = "mobiletargeting"
MAX_CLOCK_SKEW_SECONDS = 15 * 60


@dataclass(frozen=True)
class Principal:
    access_key_id: str
    role: str
    app_id: str | None


@dataclass(frozen=True)
class NewKey:
    record: KeyRecord  # what the database keeps: the secret sealed, or in clear
    token: str
    secret: str

    def credentials(self) -> dict[str, str]:
        return {
            "access_key_id": self.record.access_key_id,
            "secret_access_key": self.secret,
            "token": self.token,
        }


_SECRET_ALPHABET = string.ascii_letters + string.digits


def generate_key(role: str, app_id: str | None, *, secrets_key: SecretsKey | None = None) -> NewKey:
    """A new key; its secret is sealed with `secrets_key` in the record, if one is given."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if (role == "root") != (app_id is None):
        raise ValueError("root keys belong to no app; ingest and admin keys need one")
    alphabet = string.ascii_uppercase + string.digits
    access_key_id = "HM" + role[0].upper() + "".join(secrets.choice(alphabet) for _ in range(17))
    token = f"hm_{role}_{secrets.token_urlsafe(32)}"
    # Letters and digits only, as long as AWS's: a secret that starts with "-" would be
    # taken for an option by command-line tools (argparse, aws configure, ...).
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
    record = KeyRecord(
        access_key_id=access_key_id,
        app_id=app_id,
        role=role,
        secret=sealing.store(secret, access_key_id, secrets_key),
        token_sha256=hash_token(token),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return NewKey(record, token, secret)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Signature:
    """A SigV4 header whose key, date and scope passed: what is left is to check its
    signature, which covers the body's hash, once the body is read."""

    key: KeyRecord
    secret: str  # the key's secret, opened in memory only
    header_names: list[str]
    signed_headers: str
    amz_date: str
    scope: list[str]  # date, region, service, "aws4_request"
    signature: str


async def authenticate(
    request: Request,
    storage: Storage,
    *,
    now: datetime | None = None,
    secrets_key: SecretsKey | None = None,
    app_id: str | None = None,
) -> tuple[Principal, Signature | None, bool]:
    """Who calls, from the headers alone: the body is not read yet, so that an anonymous
    client cannot make the server read and inflate it. For SigV4, the Signature returned
    must then be checked with `verify_signature` against the body as sent; `secrets_key`
    opens the key's secret if it is sealed. Also whether the application `app_id` exists,
    read with the key (False for None), for the caller to say once it is authorised."""
    header = request.headers.get("authorization", "")
    signature: Signature | None = None
    if header[:7].lower() == "bearer ":
        key, app_found = await storage.get_caller(
            "token_sha256", hash_token(header[7:].strip()), app_id
        )
        if key is None:
            raise forbidden("The bearer token is not valid")
    elif header.startswith("AWS4-HMAC-SHA256 "):
        signature, app_found = await _sigv4_scope(
            request, header, storage, now or datetime.now(timezone.utc), secrets_key, app_id
        )
        key = signature.key
    elif header:
        raise forbidden(
            "The Authorization header is neither 'Bearer <token>' nor AWS Signature Version 4"
        )
    else:
        raise forbidden(
            "Missing credentials: sign the request with AWS Signature Version 4 "
            "or send 'Authorization: Bearer <token>'"
        )
    if key.revoked_at is not None:
        raise forbidden(f"The key {key.access_key_id} has been revoked")
    return Principal(key.access_key_id, key.role, key.app_id), signature, app_found


def authorize(principal: Principal, op: Operation, app_id: str | None) -> None:
    """Raise 403 unless `principal` may call `op` on `app_id` (None: no app)."""
    if rank(principal.role) < rank(op.role):
        needed = "a root key" if op.role == "root" else f"an {op.role} key or one above it"
        raise forbidden(
            f"The key {principal.access_key_id} is an {principal.role} key; "
            f"{op.name} needs {needed}"
        )
    if principal.role != "root" and principal.app_id != app_id:
        raise forbidden(
            f"The key {principal.access_key_id} may not call {op.name}"
            + (f" on application {app_id}" if app_id else "; it needs a root key")
        )


async def _sigv4_scope(
    request: Request,
    header: str,
    storage: Storage,
    now: datetime,
    secrets_key: SecretsKey | None,
    app_id: str | None,
) -> tuple[Signature, bool]:
    fields: dict[str, str] = {}
    for part in header[len("AWS4-HMAC-SHA256 ") :].split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    try:
        credential, signed_headers, signature = (
            fields["Credential"],
            fields["SignedHeaders"],
            fields["Signature"],
        )
        access_key_id, date, region, service, terminator = credential.split("/")
    except (KeyError, ValueError):
        raise forbidden(
            "The AWS Signature Version 4 header is malformed: it needs "
            "Credential=<key>/<date>/<region>/mobiletargeting/aws4_request, SignedHeaders "
            "and Signature"
        ) from None
    if service != SIGNING_SERVICE or terminator != "aws4_request":
        raise forbidden(f"The credential scope must name the service {SIGNING_SERVICE!r}")

    amz_date = request.headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise forbidden("X-Amz-Date is missing or not in the form 20261128T175041Z") from None
    if not amz_date.startswith(date):
        raise forbidden("The credential date does not match X-Amz-Date")
    skew = abs((now - signed_at).total_seconds())
    if skew > MAX_CLOCK_SKEW_SECONDS:
        raise forbidden(
            f"Signature expired: the request was signed at {amz_date}, {int(skew)} s from the "
            f"server's clock; at most {MAX_CLOCK_SKEW_SECONDS} s of skew is accepted"
        )
    header_names = signed_headers.split(";")
    if "host" not in header_names:
        raise forbidden("SignedHeaders must include host")

    key, app_found = await storage.get_caller("access_key_id", access_key_id, app_id)
    if key is None:
        raise forbidden(f"The access key id {access_key_id} does not exist")
    try:
        # A revoked key is refused next, whether or not its secret opens.
        secret = "" if key.revoked_at else sealing.reveal(key.secret, access_key_id, secrets_key)
    except SecretsKeyError as exc:
        # Not the client's doing: the collector runs without the key file that sealed this
        # secret (serve refuses to start so; a rotation while it ran does it). Retrying
        # succeeds once it restarts with the right key file.
        logger.error("cannot check a SigV4 signature: %s", exc)
        raise PinpointError(
            503, "The collector cannot read this key's secret now; retry later", retry_after=30
        ) from None
    return Signature(
        key, secret, header_names, signed_headers, amz_date,
        [date, region, service, "aws4_request"], signature,
    ), app_found  # fmt: skip


def verify_signature(
    request: Request, sig: Signature, body: bytes, *, payload_hash: str | None = None
) -> None:
    """Raise 403 unless `sig` signs this request with `body`, the body as sent (or, for a
    body streamed elsewhere, with the body whose SHA-256 in hex is `payload_hash`)."""
    if payload_hash is None:
        payload_hash = hashlib.sha256(body).hexdigest()
    claimed = request.headers.get("x-amz-content-sha256")
    if claimed is not None and claimed not in (payload_hash, "UNSIGNED-PAYLOAD"):
        raise forbidden("X-Amz-Content-SHA256 does not match the body")
    canonical = "\n".join(
        [
            request.method,
            _canonical_path(request.scope.get("raw_path") or request.url.path.encode()),
            _canonical_query(request.scope.get("query_string", b"")),
            "".join(f"{name}:{_header_value(request, name)}\n" for name in sig.header_names),
            sig.signed_headers,
            claimed if claimed == "UNSIGNED-PAYLOAD" else payload_hash,
        ]
    )
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            sig.amz_date,
            "/".join(sig.scope),
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    signing_key = ("AWS4" + sig.secret).encode()
    for part in sig.scope:
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    # Bytes, not str: compare_digest refuses a str with non-ASCII characters, and header
    # bytes arrive decoded as latin-1, so a forged Signature= could otherwise be a 500.
    if not hmac.compare_digest(expected.encode(), sig.signature.encode()):
        raise forbidden(
            "The request signature we calculated does not match the signature you provided. "
            "Check your secret access key and signing method."
        )


def _canonical_path(raw_path: bytes) -> str:
    path = raw_path.decode("latin-1")
    normalized = posixpath.normpath(path) if path else "/"
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    if normalized.startswith("//"):
        normalized = "/" + normalized.lstrip("/")
    # Every AWS SDK encodes the already-encoded path once more for this service.
    return quote(normalized, safe="/~")


def _canonical_query(query_string: bytes) -> str:
    if not query_string:
        return ""
    pairs = []
    for pair in query_string.decode("latin-1").split("&"):
        name, _, value = pair.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _header_value(request: Request, name: str) -> str:
    values = request.headers.getlist(name)
    return ",".join(" ".join(value.split()) for value in values)
