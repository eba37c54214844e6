"""Device credentials: what CreateDeviceCredential and RevokeDeviceCredential answer."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct


class DeviceCredentialResponse(Struct, kw_only=True):
    ApplicationId: str
    EndpointId: str
    DeviceCredential: Annotated[
        str, Meta(description="Send it as X-Homing-Device-Credential; shown once.")
    ]
    CreationDate: str


class DeviceCredentialRevoked(Struct, kw_only=True):
    ApplicationId: str
    EndpointId: str
    RevokedDate: str
