"""Pinpoint-shaped errors.

Every error answers ``{"Message": ..., "RequestID": ...}`` with the headers
``x-amzn-ErrorType: <Name>Exception`` and ``x-amzn-RequestId``, so that botocore raises
``BadRequestException``, ``NotFoundException`` and the rest by name.
"""

from __future__ import annotations

import math

import orjson
from starlette.requests import Request
from starlette.responses import Response

ERROR_NAMES = {
    400: "BadRequestException",
    403: "ForbiddenException",
    404: "NotFoundException",
    405: "MethodNotAllowedException",
    409: "ConflictException",
    413: "PayloadTooLargeException",
    429: "TooManyRequestsException",
    500: "InternalServerErrorException",
    501: "NotImplementedException",
}


class PinpointError(Exception):
    def __init__(self, status_code: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after  # seconds, sent as Retry-After
        # Answered before the request's body was read: the answer says Connection: close,
        # so that the server neither waits for that body nor reads it to reuse the
        # connection.
        self.body_unread = False


def bad_request(message: str) -> PinpointError:
    return PinpointError(400, message)


def not_found(message: str) -> PinpointError:
    return PinpointError(404, message)


def not_implemented(feature: str, storage: str) -> PinpointError:
    """A feature this collector has, but not on the storage it runs on: 501, not a 500."""
    return PinpointError(501, f"{feature}: not available on {storage} yet")


def forbidden(message: str) -> PinpointError:
    return PinpointError(403, message)


def too_many_requests(message: str, retry_after: float) -> PinpointError:
    return PinpointError(429, message, retry_after=max(1, math.ceil(retry_after)))


def request_id(request: Request) -> str:
    return str(request.scope.get("homing.request_id", ""))


def error_response(
    status_code: int,
    message: str,
    rid: str,
    *,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    name = ERROR_NAMES.get(
        status_code, ERROR_NAMES[500] if status_code >= 500 else ERROR_NAMES[400]
    )
    answer = {**(headers or {}), "x-amzn-ErrorType": name, "x-amzn-RequestId": rid}
    if retry_after is not None:
        answer["Retry-After"] = str(retry_after)
    return Response(
        orjson.dumps({"Message": message, "RequestID": rid}),
        status_code=status_code,
        headers=answer,
        media_type="application/json",
    )
