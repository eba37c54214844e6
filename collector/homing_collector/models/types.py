"""The strings and numbers that many bodies share."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from homing import limits


def _escape(code: int) -> str:
    # JSON Schema patterns are ECMA-262: \uXXXX for the BMP. An astral code point goes in
    # as itself; surrogates never do, as a lone one cannot be written in JSON.
    return f"\\u{code:04x}" if code < 0x10000 else chr(code)


def _printable_ranges() -> list[tuple[int, int]]:
    """The runs of code points that str.isprintable() takes, the rule of
    homing.wire.check_id, from this Python's Unicode tables."""
    ranges = []
    start = None
    for block in range(0, 0x110000, 256):
        # str.isprintable over a block, in C: a block all of one kind costs no Python loop.
        flags = list(map(str.isprintable, map(chr, range(block, block + 256))))
        if all(flags) if start is not None else not any(flags):
            continue
        for code, printable in enumerate(flags, block):
            if printable:
                if start is None:
                    start = code
            elif start is not None:
                ranges.append((start, code - 1))
                start = None
    if start is not None:
        ranges.append((start, 0x10FFFF))
    return ranges


def _char_class(ranges: list[tuple[int, int]], but: str = "") -> str:
    """A class of the code points in `ranges`, less the characters `but`. (A class of what
    is allowed, not a negated one: test-data generators draw from it several times
    faster.)"""
    for char in but:
        code = ord(char)
        ranges = [
            part
            for a, b in ranges
            for part in (((a, code - 1), (code + 1, b)) if a <= code <= b else ((a, b),))
            if part[0] <= part[1]
        ]
    return (
        "["
        + "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in ranges)
        + "]"
    )


def whole(regex: str) -> str:
    """A pattern that `regex` must match whole. JSON Schema's patterns, like msgspec's,
    are searched, and `$` alone also matches before a final newline."""
    return f"^(?:{regex})(?![\\s\\S])"


_PRINTABLE_RANGES = _printable_ranges()
PRINTABLE = whole(_char_class(_PRINTABLE_RANGES) + "*")
PRINTABLE_NO_SLASH = whole(_char_class(_PRINTABLE_RANGES, but="/") + "*")
# What each pattern means, for the messages of a 400.
PATTERNS = {
    PRINTABLE: "a printable string, without control characters",
    PRINTABLE_NO_SLASH: 'a printable string, without control characters or "/"',
}


def described(regex: str, said: str) -> str:
    """`whole(regex)`, noted in PATTERNS as `said`."""
    pattern = whole(regex)
    PATTERNS[pattern] = said
    return pattern


# homing.wire.check_id: non-empty, printable, at most MAX_ID_LENGTH characters.
Id = Annotated[str, Meta(min_length=1, max_length=limits.MAX_ID_LENGTH, pattern=PRINTABLE)]
# homing.wire.check_url_id: an id that is one segment of a URL, so without "/".
UrlId = Annotated[
    str, Meta(min_length=1, max_length=limits.MAX_ID_LENGTH, pattern=PRINTABLE_NO_SLASH)
]
# homing.wire.NUL_RULE, for the document: the strings stored as text, which PostgreSQL's
# cannot hold a NUL in. (homing.wire's checks refuse it, naming the field, before the
# models are checked. A pattern of what is allowed made schemathesis too slow to draw
# an endpoint.)
NO_NUL: dict[str, Any] = {"not": {"pattern": "\\u0000"}}
# Free-form endpoint and event strings (Address, AppTitle, ...).
PlainString = Annotated[
    str, Meta(max_length=limits.MAX_PLAIN_STRING_LENGTH, extra_json_schema=NO_NUL)
]
# ISO-8601; one without an offset is taken as UTC.
Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
Count = Annotated[int, Meta(ge=0)]
Rate = Annotated[float, Meta(ge=0, le=1)]
StringMap = dict[str, str]


def with_examples(model: Any, *examples: Any) -> Any:
    """`model` with examples for the document (schemathesis's examples phase sends them)."""
    return Annotated[model, Meta(examples=list(examples))]
