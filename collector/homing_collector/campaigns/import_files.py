"""Pinpoint's import file formats, read one batch of rows at a time from a binary file.

- CSV: a header row of dotted names (`ChannelType`, `Address`, `Id`, `User.UserId`,
  `User.UserAttributes.x`, `Attributes.x`, `Metrics.x`, `Demographic.Platform`,
  `Location.Country`, `OptOut`, ...), then one endpoint per row. A multi-valued attribute
  repeats its column once per value; an empty cell gives nothing.
- JSON: newline-delimited, one endpoint object per line, as UpdateEndpoint takes it, with
  `Id` beside the other members.

Each row is checked with the rules of UpdateEndpoint (`homing.wire.check_endpoint`). A row
that breaks one is reported, `row N: field: rule`, and the others go on. A row needs an
`Id`, or `ChannelType` and `Address` (its id is then derived from them, so that importing
the same file again updates the same endpoints), or only `User.UserId` (it then means
every endpoint the user has). Only a file that cannot be read at all (not UTF-8, a header
that names no endpoint field) raises `ImportFileError`.

Nothing holds the file: CSV goes through a `csv.reader` over an incremental decoder, JSON
one bounded line at a time.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson

from homing.wire import DEMOGRAPHIC_FIELDS, WireError, check_endpoint, check_url_id
from homing_collector.storage.base import ImportRow

FORMATS = ("CSV", "JSON")
MAX_LINE_BYTES = 1 << 20  # a JSON line; an endpoint is at most 15 KB anyway
_SCALARS = ("Id", "Address", "ChannelType", "EffectiveDate", "EndpointStatus", "OptOut",
            "RequestId")  # fmt: skip
_LOCATION = ("City", "Country", "PostalCode", "Region")
_COORDINATES = ("Latitude", "Longitude")
COLUMNS = (
    *_SCALARS, "User.UserId", "User.UserAttributes.NAME", "Attributes.NAME", "Metrics.NAME",
    *(f"Demographic.{name}" for name in DEMOGRAPHIC_FIELDS),
    *(f"Location.{name}" for name in (*_LOCATION, *_COORDINATES)),
)  # fmt: skip


class ImportFileError(ValueError):
    """The file cannot be read as an import file at all."""


Cell = Callable[[dict[str, Any], str], None]  # puts one CSV cell into an endpoint


class ImportReader:
    """Rows of an import file. `position` is how many bytes of it were read."""

    def __init__(self, raw: IO[bytes], file_format: str) -> None:
        if file_format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        self._raw = _Counting(raw)
        self._rows = _csv_rows(self._raw) if file_format == "CSV" else _json_rows(self._raw)

    @property
    def position(self) -> int:
        return self._raw.count

    def batch(self, size: int) -> tuple[list[ImportRow], list[str], bool]:
        """Up to `size` rows: (the good ones, a message for each bad one, whether the file
        is done). Raises `ImportFileError`."""
        good: list[ImportRow] = []
        bad: list[str] = []
        for row, data in self._rows:
            if isinstance(data, WireError):
                bad.append(f"row {row}: {data}")
            else:
                try:
                    good.append(endpoint_row(row, data))
                except WireError as exc:
                    bad.append(f"row {row}: {exc}")
            if len(good) + len(bad) >= size:
                return good, bad, False
        return good, bad, True


def endpoint_row(row: int, data: dict[str, Any]) -> ImportRow:
    """One endpoint definition, checked as UpdateEndpoint checks its body."""
    endpoint_id = data.pop("Id", None)
    check_endpoint(data, "")
    if endpoint_id is not None:
        return ImportRow(row, check_url_id(endpoint_id, "Id"), data)
    user = data.get("User")
    if list(data) == ["User"] and isinstance(user, dict) and list(user) == ["UserId"]:
        return ImportRow(row, None, data)
    if data.get("ChannelType") is None or not data.get("Address"):
        raise WireError(
            "Id",
            "is required, unless the row gives ChannelType and Address (a new endpoint) or "
            "only User.UserId (every endpoint of that user)",
        )
    return ImportRow(row, derived_id(data["ChannelType"], data["Address"]), data)


def derived_id(channel: str, address: str) -> str:
    """The id of an endpoint imported without one: the same for the same channel and
    address, so that a file imported twice updates the endpoints it made."""
    return hashlib.sha256(f"{channel}\n{address}".encode()).hexdigest()[:32]


# -- CSV ---------------------------------------------------------------------------------


def _csv_rows(raw: _Counting) -> Iterator[tuple[int, dict[str, Any] | WireError]]:
    text = io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    try:
        header = _next_record(reader)
        while isinstance(header, list) and not any(header):
            header = _next_record(reader)
        if header is None:
            return
        if isinstance(header, WireError):
            raise ImportFileError(f"row 1, the header: {header.rule}")
        cells = [_column(index, name.strip()) for index, name in enumerate(header)]
        while True:
            record = _next_record(reader)
            if record is None:
                return
            if isinstance(record, WireError):
                yield reader.line_num, record
                continue
            if not any(record):
                continue  # a blank line
            if len(record) != len(header):
                yield (
                    reader.line_num,
                    WireError("", f"has {len(record)} cells; the header has {len(header)}"),
                )
                continue
            endpoint: dict[str, Any] = {}
            try:
                for put, value in zip(cells, record, strict=True):
                    if value != "":
                        put(endpoint, value)
            except WireError as exc:
                yield reader.line_num, exc
                continue
            yield reader.line_num, endpoint
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            f"the file is not UTF-8 (near row {reader.line_num + 1}: {exc.reason}); "
            "save it as UTF-8 and import it again"
        ) from None


def _next_record(reader: Any) -> list[str] | WireError | None:
    try:
        return next(reader)  # type: ignore[no-any-return]
    except StopIteration:
        return None
    except csv.Error as exc:
        return WireError("", f"is not valid CSV ({exc})")


def _column(index: int, name: str) -> Cell:
    parts = name.split(".")
    if name in _SCALARS:
        return _scalar(name)
    if name == "User.UserId":
        return lambda endpoint, value: _set(endpoint, ("User", "UserId"), value)
    if len(parts) >= 2 and parts[0] == "Attributes":
        return _multi(("Attributes", name[len("Attributes.") :]))
    if len(parts) >= 3 and parts[:2] == ["User", "UserAttributes"]:
        return _multi(("User", "UserAttributes", name[len("User.UserAttributes.") :]))
    if len(parts) >= 2 and parts[0] == "Metrics":
        return _number(("Metrics", name[len("Metrics.") :]))
    if len(parts) == 2 and parts[0] == "Demographic" and parts[1] in DEMOGRAPHIC_FIELDS:
        return lambda endpoint, value: _set(endpoint, ("Demographic", parts[1]), value)
    if len(parts) == 2 and parts[0] == "Location" and parts[1] in _LOCATION:
        return lambda endpoint, value: _set(endpoint, ("Location", parts[1]), value)
    if len(parts) == 2 and parts[0] == "Location" and parts[1] in _COORDINATES:
        return _number(("Location", parts[1]))
    raise ImportFileError(
        f"row 1, the header: column {index + 1}, {name[:60]!r}, is not an endpoint field; "
        f"the columns are {', '.join(COLUMNS)} (names are case-sensitive)"
    )


def _scalar(name: str) -> Cell:
    def put(endpoint: dict[str, Any], value: str) -> None:
        if name in endpoint:
            raise WireError(name, "is given twice; only attributes may repeat their column")
        endpoint[name] = value

    return put


def _set(endpoint: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = endpoint
    for part in path[:-1]:
        target = target.setdefault(part, {})
    if path[-1] in target:
        raise WireError(".".join(path), "is given twice; only attributes may repeat their column")
    target[path[-1]] = value


def _multi(path: tuple[str, ...]) -> Cell:
    def put(endpoint: dict[str, Any], value: str) -> None:
        target = endpoint
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target.setdefault(path[-1], []).append(value)

    return put


def _number(path: tuple[str, ...]) -> Cell:
    def put(endpoint: dict[str, Any], value: str) -> None:
        try:
            number = float(value)
        except ValueError:
            raise WireError(".".join(path), f"{value[:40]!r} is not a number") from None
        _set(endpoint, path, int(number) if number.is_integer() and "." not in value else number)

    return put


# -- JSON --------------------------------------------------------------------------------


def _json_rows(raw: _Counting) -> Iterator[tuple[int, dict[str, Any] | WireError]]:
    row = 0
    while True:
        line = raw.readline(MAX_LINE_BYTES)
        if not line:
            return
        row += 1
        if not line.endswith(b"\n") and len(line) >= MAX_LINE_BYTES:
            while True:  # skip the rest of the line
                rest = raw.readline(MAX_LINE_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            yield row, WireError("", f"is longer than {MAX_LINE_BYTES} bytes")
            continue
        if row == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]  # a byte order mark
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield row, WireError("", f"is not valid JSON ({exc})")
            continue
        if type(data) is not dict:
            yield row, WireError("", "must be a JSON object, one endpoint per line")
            continue
        yield row, data


class _Counting(io.RawIOBase):
    """A binary file that counts the bytes read from it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._file = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._file.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        line = self._file.readline(-1 if size is None else size)
        self.count += len(line)
        return line
