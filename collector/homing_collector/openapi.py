"""The OpenAPI 3.1 document, generated from the route table and its msgspec models, so
that it says what the collector checks: the same types validate each request."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from homing import __version__
from homing_collector.operation import NO_ROLE, Operation

REF = "#/components/schemas/{name}"
_ERRORS = {
    "400": "BadRequestException: the field and the rule it broke",
    "403": "ForbiddenException: missing, bad or revoked credentials, or the wrong role or app",
    "404": "NotFoundException",
    "405": "MethodNotAllowedException",
    "413": "PayloadTooLargeException: over 4 MB, compressed or inflated",
    "429": "TooManyRequestsException: retry after the Retry-After header's seconds",
    "503": "InternalServerErrorException: retry after the Retry-After header's seconds",
}
_OPEN_ERRORS = ("404", "405", "503")  # what a route that needs no key can answer


def _param(name: str) -> str:
    return name.replace("_", "-")


def _plain_refs(schema: Any) -> Any:
    """`schema` with each `$ref` alone in its object: a `$ref` with siblings (msgspec's
    extra_json_schema on a Struct) becomes an allOf, which OpenAPI 3.0 tools also read."""
    if isinstance(schema, (list, tuple)):
        return type(schema)(_plain_refs(item) for item in schema)
    if not isinstance(schema, dict):
        return schema
    schema = {key: _plain_refs(value) for key, value in schema.items()}
    if "$ref" in schema and len(schema) > 1:
        rest = {key: value for key, value in schema.items() if key != "$ref"}
        return {"allOf": [{"$ref": schema["$ref"]}], **rest}
    return schema


def document(
    operations: Sequence[Operation],
    path_parameters: dict[str, Any],
    extra_schemas: Sequence[Any] = (),
) -> dict[str, Any]:
    # Every type once, in one call, so that the components are shared.
    types: list[Any] = [*extra_schemas]
    for op in operations:
        types += [op.request, op.response, op.query]
    types += path_parameters.values()
    given = [t for t in types if t is not None]
    schemas, components = _plain_refs(msgspec.json.schema_components(given, ref_template=REF))
    schema_of = dict(zip(map(id, given), schemas, strict=True))
    error = {"$ref": REF.format(name="Error")}  # routes.EXTRA_SCHEMAS gives it
    query_models = {op.query for op in operations if op.query is not None}
    query_schemas = {model: components[model.__name__] for model in query_models}
    for model in query_models:  # parameters, not bodies: no component of their own
        components.pop(model.__name__, None)

    paths: dict[str, Any] = {}
    for op in operations:
        operation: dict[str, Any] = {"operationId": op.name, "summary": op.summary}
        description = [op.notes] if op.notes else []
        params = [
            {
                "name": _param(name),
                "in": "path",
                "required": True,
                "schema": schema_of[id(path_parameters[name])],
            }
            for name in re.findall(r"{(\w+)}", op.path)
        ]
        if op.query is not None:
            query = query_schemas[op.query]
            required = set(query.get("required", ()))
            for name, schema in query["properties"].items():
                schema = {k: v for k, v in schema.items() if k != "default"}
                if "anyOf" in schema and {"type": "null"} in schema["anyOf"]:
                    # Optional: left out, never null.
                    rest = [s for s in schema["anyOf"] if s != {"type": "null"}]
                    schema = rest[0] if len(rest) == 1 else {"anyOf": rest}
                params.append(
                    {"name": name, "in": "query", "required": name in required, "schema": schema}
                )
        if params:
            operation["parameters"] = params
        if op.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[id(op.request)]}},
            }
        if op.body_media_type is not None:
            binary = {"schema": {"type": "string", "format": "binary"}}
            operation["requestBody"] = {
                "required": True,
                "content": {kind: binary for kind in op.body_media_type.split(", ")},
            }
        success: dict[str, Any] = {"description": "Success"}
        if op.response is not None:
            schema = schema_of[id(op.response)]
            success["content"] = {kind: {"schema": schema} for kind in op.media_type.split(", ")}
        responses: dict[str, Any] = {str(op.status): success}
        if op.role == NO_ROLE:
            operation["security"] = []
            codes = [c for c in _OPEN_ERRORS if c != "404" or "{" in op.path]
        else:
            description.insert(0, f"Needs a key with the {op.role} role or above.")
            codes = list(_ERRORS)
        if op.name == "DashboardAsset":
            responses["304"] = {"description": "Not modified: the ETag matches If-None-Match"}
        for code in codes:
            responses[code] = {
                "description": _ERRORS[code],
                "content": {"application/json": {"schema": error}},
            }
        operation["responses"] = responses
        if description:
            operation["description"] = " ".join(description)
        path = re.sub(r"{(\w+)}", lambda m: "{" + _param(m.group(1)) + "}", op.path)
        paths.setdefault(path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Homing collector",
            "version": __version__,
            "description": "Amazon Pinpoint's REST API for events, endpoints, apps and push, "
            "self-hosted, and Homing's own routes (keys, push streams, analytics, the "
            "dashboard). Roles are ordered ingest < admin < root: a key may call an "
            "operation when its role is at least the operation's; ingest and admin keys "
            "on their own application only, root keys on every one.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "sigv4": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "AWS Signature Version 4, service mobiletargeting, any region",
                },
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"sigv4": []}, {"bearer": []}],
    }
