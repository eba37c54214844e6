"""Whole numbers from query parameters and headers."""

from __future__ import annotations


def whole_number(raw: str | None, max_digits: int = 18) -> int | None:
    """`raw` as an int if it is 1 to `max_digits` ASCII digits, else None.

    str.isdigit() alone is not enough: it is true for "²", which int() refuses (a 500),
    and for "٣" (Arabic-Indic three), which int() reads though no client means it. The
    length bound keeps int() within its 4,300-digit limit and the value within 64 bits.
    """
    if raw is None or not 1 <= len(raw) <= max_digits:
        return None
    if not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)
