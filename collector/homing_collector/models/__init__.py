"""The API's bodies, answers and query parameters as msgspec types.

Each constraint comes from the constant that the validators use (`homing.limits`, the
push and analytics modules), so the OpenAPI document, generated from these types, says
what the collector checks. Where a rule cannot be said in JSON Schema, the operation's
description in the route table says it.
"""
