"""The role matrix: every operation of the route table, against every kind of caller.

The expected answer of each cell comes from the rule in docs/api.md (Roles), applied to
the role the route table declares; a new route is covered as soon as it is in the table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from homing_collector.operation import NO_ROLE, Operation, rank
from homing_collector.routes import OPERATIONS
from tests.conftest import App, Credentials, LiveCollector

PATH_VALUES = {
    "endpoint_id": "matrix-endpoint",
    "user_id": "matrix-user",
    "access_key_id": "HMANOSUCHKEY0000000",
    "kpi_name": "unique-deliveries",
    "segment_id": "matrix-segment",
    "job_id": "matrix-job",
    "campaign_id": "matrix-campaign",
    "delivery_id": "msg_matrix",
    "version": "1",
    "name": "dashboard.js",
}


@dataclass(frozen=True)
class Caller:
    name: str
    role: str | None  # None: no valid credentials at all
    own_app: bool  # whether its key belongs to the application called
    headers: dict[str, str]


def may_call(caller: Caller, op: Operation) -> bool:
    """The documented rule: a role at least the operation's; ingest and admin keys on
    their own application only, a root key on every one."""
    if op.role == NO_ROLE:
        return True
    if caller.role is None or rank(caller.role) < rank(op.role):
        return False
    return caller.role == "root" or (op.app_scoped and caller.own_app)


def bearer(creds: Credentials) -> dict[str, str]:
    return {"Authorization": f"Bearer {creds.token}"}


def url_of(collector: LiveCollector, op: Operation, app_id: str) -> str:
    values = {**PATH_VALUES, "application_id": app_id}
    return collector.url + re.sub(r"{(\w+)}", lambda m: values[m.group(1)], op.path)


def bad_signature(url: str, method: str, key_id: str, body: bytes) -> dict[str, str]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    request = AWSRequest(method=method, url=url, data=body)
    SigV4Auth(BotoCredentials(key_id, "not-the-secret"), "mobiletargeting", "eu-west-1").add_auth(
        request
    )
    return {k: v for k, v in request.headers.items() if k.lower() != "content-length"}


def status_of(method: str, url: str, headers: dict[str, str], body: bytes | None) -> int:
    # A push stream never ends: the status line is all this needs.
    with httpx.stream(method, url, headers=headers, content=body, timeout=30) as response:
        return response.status_code


@pytest.fixture
def callers(collector: LiveCollector) -> Iterator[tuple[App, list[Caller]]]:
    app = collector.create_app("matrix")
    other = collector.create_app("matrix-other")
    revoked = json.loads(
        collector.cli("keys", "create", "--app", app.id, "--role", "admin", "--json")
    )
    collector.cli("keys", "revoke", revoked["access_key_id"])
    root = collector.root_key()
    yield (
        app,
        [
            Caller("ingest", "ingest", True, bearer(app.ingest)),
            Caller("admin", "admin", True, bearer(app.admin)),
            Caller("another app's admin", "admin", False, bearer(other.admin)),
            Caller("another app's ingest", "ingest", False, bearer(other.ingest)),
            Caller("revoked admin", None, True, {"Authorization": f"Bearer {revoked['token']}"}),
            Caller("no key", None, True, {}),
            Caller("bad SigV4 signature", None, True, {}),
            # Last: its DeleteApp call deletes the application.
            Caller("root", "root", False, bearer(root)),
        ],
    )


@pytest.mark.parametrize("op", OPERATIONS, ids=[op.name for op in OPERATIONS])
def test_role_matrix(
    collector: LiveCollector, callers: tuple[App, list[Caller]], op: Operation
) -> None:
    app, cast = callers
    url = url_of(collector, op, app.id)
    body = b"{}" if op.request is not None else None
    wrong: list[str] = []
    for caller in cast:
        headers = caller.headers
        if caller.name == "bad SigV4 signature":
            headers = bad_signature(url, op.method, app.admin.access_key_id, body or b"")
        status = status_of(op.method, url, headers, body)
        if (status != 403) != may_call(caller, op):
            wrong.append(f"{caller.name}: {status}, expected {'not ' * may_call(caller, op)}403")
    assert not wrong, f"{op.name} ({op.role}): " + "; ".join(wrong)


def test_the_matrix_covers_each_role_and_both_kinds_of_route() -> None:
    roles = {op.role for op in OPERATIONS}
    assert roles == {NO_ROLE, "ingest", "admin", "root"}
    assert any(op.app_scoped for op in OPERATIONS)
    assert any(not op.app_scoped and op.role != NO_ROLE for op in OPERATIONS)
