"""Message variables: `{{User.UserAttributes.FirstName}}`, `{{Attributes.x}}`,
`{{Demographic.Platform}}` and the rest, filled from each endpoint.

Pinpoint (user guide, campaigns-message and message-templates-personalizing): a variable
is the endpoint field's path with its exact capitalization; a variable with no value
takes the template's default substitution, and with none, "Amazon Pinpoint omits all
text for the variable". Templates are Handlebars: `{{{x}}}` is the same variable
unescaped, a multi-valued attribute prints its values joined by commas, and `.[0]`
picks one of them.

Homing fills `Title`, `Body`, `HtmlBody` and each string of `Data`, and never escapes:
push and SMS text is not HTML. Handlebars helpers and blocks (`{{#if}}`, `{{#each}}`)
are not evaluated and are left as written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

_SEGMENT = r"(?:[A-Za-z0-9_:\-]+|\[[^\]{}]*\])"
_VARIABLE = re.compile(r"\{\{(\{)?\s*(" + _SEGMENT + r"(?:\." + _SEGMENT + r")*)\s*(?(1)\})\}\}")
FILLED_FIELDS = ("Title", "Body", "HtmlBody")

Part = str | tuple[str, tuple[str, ...]]  # literal text, or (the variable, its path)


def fill(text: str, endpoint: Mapping[str, Any], defaults: Mapping[str, str] | None = None) -> str:
    """`text` with every variable replaced by the endpoint's value, the default, or nothing.

    >>> ada = {"User": {"UserAttributes": {"FirstName": ["Ada"]}}}
    >>> fill("Hi {{User.UserAttributes.FirstName}}!", ada)
    'Hi Ada!'
    >>> fill("Hi {{User.UserAttributes.FirstName}}!", {})
    'Hi !'
    """
    parts = _compile(text)
    if len(parts) == 1 and isinstance(parts[0], str):
        return parts[0]
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        name, path = part
        value = _text(_lookup(endpoint, path))
        if value is None and defaults is not None:
            value = defaults.get(name)
        out.append(value or "")
    return "".join(out)


def fill_message(
    message: Mapping[str, Any],
    endpoint: Mapping[str, Any],
    defaults: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A copy of `message` (a Message, as JSON) with its text fields and `Data` filled."""
    filled = dict(message)
    for name in FILLED_FIELDS:
        if isinstance(filled.get(name), str):
            filled[name] = fill(filled[name], endpoint, defaults)
    data = filled.get("Data")
    if isinstance(data, Mapping):
        filled["Data"] = {
            k: fill(v, endpoint, defaults) if isinstance(v, str) else v for k, v in data.items()
        }
    return filled


@lru_cache(maxsize=256)
def _compile(text: str) -> tuple[Part, ...]:
    parts: list[Part] = []
    last = 0
    for match in _VARIABLE.finditer(text):
        if match.group(2) == "else":  # part of a block, which stays as written
            continue
        if match.start() > last:
            parts.append(text[last : match.start()])
        name = match.group(2)
        path = tuple(_segments(name))
        parts.append((name, path))
        last = match.end()
    if last < len(text) or not parts:
        parts.append(text[last:])
    return tuple(parts)


def _segments(name: str) -> list[str]:
    return [s[1:-1] if s.startswith("[") else s for s in re.findall(_SEGMENT, name)]


def _lookup(value: Any, path: tuple[str, ...]) -> Any:
    for segment in path:
        if isinstance(value, Mapping):
            value = value.get(segment)
        elif isinstance(value, list) and segment.isdigit():
            index = int(segment)
            value = value[index] if index < len(value) else None
        else:
            return None
    return value


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, Mapping):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # as JavaScript prints a number: 3, not 3.0
    if isinstance(value, list):
        values = [t for t in map(_text, value) if t is not None]
        return ",".join(values) if values else None
    return str(value)
