"""One operation of the API, as the route table declares it, and who may call it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Awaitable[Response]]

# The roles, least first. A key may call an operation when its role is at least the
# operation's: root can do what admin can, and admin what ingest can.
ROLES = ("ingest", "admin", "root")
NO_ROLE = "none"  # an operation anyone may call, with no credentials


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str
    handler: Handler
    status: int
    summary: str
    role: str  # the least role that may call it: NO_ROLE or one of ROLES
    request: Any = None  # the body's model (a msgspec type), or None: no body
    response: Any = None  # the answer's model, or None
    media_type: str = "application/json"  # or several, joined by ", "
    query: Any = None  # the query parameters' model (a msgspec Struct), or None
    notes: str = ""  # rules that JSON Schema cannot say, for the document
    # The operation's own check of the body (or, without one, of the query parameters),
    # run before the model so that its messages, which name the field and the rule, come
    # first; its result is Call.checked.
    check: Callable[[Any], Any] | None = None
    # A body that is not JSON, which the handler streams itself: its media types, joined
    # by ", ". The document gives it as binary.
    body_media_type: str | None = None

    @property
    def app_scoped(self) -> bool:
        return "{application_id}" in self.path


def rank(role: str) -> int:
    return ROLES.index(role)


def operation_of(request: Request) -> Operation:
    """The operation the route table bound to this request (see `bind`)."""
    return request.scope["homing.operation"]  # type: ignore[no-any-return]


def bind(op: Operation) -> Handler:
    """The operation's handler, which can find its operation from the request."""

    async def endpoint(request: Request) -> Response:
        request.scope["homing.operation"] = op
        return await op.handler(request)

    endpoint.__name__ = op.name
    return endpoint
