"""Read Pinpoint event-stream archives as Kinesis Firehose wrote them to S3.

A file is gzip or plain, and holds JSON records one per line or concatenated with no
separator at all (`{...}{...}`), which is what Firehose writes unless told otherwise.
Files are streamed in chunks, never read whole, and every record or refusal comes with
its line number and its byte offset in the (uncompressed) file, so that an import can
report what it refused, line by line.

A newline is always a boundary: JSON strings cannot hold one. Within a line, records
are split where `}` meets `{`; a split that falls inside a string value fails to parse
and is joined with the next piece.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Generator, Iterator
from typing import Any, NamedTuple, Protocol

import orjson

CHUNK_BYTES = 1 << 20
# A line longer than this is read as concatenated records. Pinpoint's largest event is
# 1,000 KB; a record carries an endpoint (at most 15 KB) and some envelope besides.
WINDOW_BYTES = 4 << 20
_JUNCTION = re.compile(rb"\}[ \t\r]*\{")
_GZIP_MAGIC = b"\x1f\x8b"


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class Item(NamedTuple):
    """One record read, or one refusal (`record` None, `error` saying why)."""

    line: int  # 1-based
    offset: int  # bytes from the start of the uncompressed file
    record: dict[str, Any] | None
    error: str = ""


def read_archive(path: str | os.PathLike[str]) -> Iterator[Item]:
    """The records of one archive file, gzip or plain, in order."""
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if compressed:
            with gzip.GzipFile(fileobj=raw) as unzipped:
                yield from read_stream(unzipped)
        else:
            yield from read_stream(raw)


def read_stream(
    stream: Readable, *, chunk_bytes: int = CHUNK_BYTES, window_bytes: int = WINDOW_BYTES
) -> Iterator[Item]:
    """The records of an uncompressed stream; at most about `window_bytes` plus
    `chunk_bytes` of it are held at once."""
    buffer = b""
    base = 0  # the file offset of buffer[0]
    line = 1  # the line number of buffer[0]
    while True:
        try:
            chunk = stream.read(chunk_bytes)
        except (OSError, EOFError) as exc:  # a truncated or corrupt gzip file
            yield Item(line, base, None, f"the file cannot be read further: {exc}")
            return
        buffer += chunk
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            # The common case, one record a line, costs one orjson call.
            text = buffer[start:end]
            try:
                record = orjson.loads(text)
            except orjson.JSONDecodeError:
                yield from _pieces(text, base + start, line, window_bytes, final=True)
            else:
                if type(record) is dict:
                    yield Item(line, base + start, record)
                else:
                    yield _not_an_object(line, base + start, record)
            line += 1
            start = end + 1
        buffer = buffer[start:]
        base += start
        if not chunk:
            if buffer.strip():
                yield from _pieces(buffer, base, line, window_bytes, final=True)
            return
        if len(buffer) > window_bytes:
            # A line this long is concatenated records: take the complete ones now.
            used = yield from _pieces(buffer, base, line, window_bytes, final=False)
            buffer = buffer[used:]
            base += used
            if len(buffer) > 2 * window_bytes:  # no record in sight: not JSON records
                yield Item(line, base, None, f"no JSON record in {len(buffer)} bytes")
                base += len(buffer)
                buffer = b""


def _pieces(
    data: bytes, base: int, line: int, window_bytes: int, *, final: bool
) -> Generator[Item, None, int]:
    """Yield the records in `data`, split where `}` meets `{`; return how many bytes they
    used. Unless `final`, the last piece may be incomplete and is left for more data.
    A generator, not a list: a window's records held at once cost the garbage collector
    more than reading them (bench/import.py --concatenated)."""
    start = _skip_space(data, 0)
    for junction in _JUNCTION.finditer(data):
        end = junction.start() + 1
        if end <= start:
            continue
        try:
            record = orjson.loads(data[start:end])
        except orjson.JSONDecodeError as exc:
            # Ended too soon: the junction sits inside a string; try the next one. Failed
            # before its end, or longer than any record: the piece is bad; skip it.
            if exc.pos < end - start or end - start > window_bytes:
                yield Item(line, base + start, None, f"not valid JSON: {exc}")
                start = junction.end() - 1
            continue
        yield Item(line, base + start, record)
        start = junction.end() - 1
    if not final:
        return start
    tail = data[start:]
    if tail.strip():
        try:
            record = orjson.loads(tail)
        except orjson.JSONDecodeError as exc:
            yield Item(line, base + start, None, f"not valid JSON: {exc}")
        else:
            if type(record) is dict:
                yield Item(line, base + start, record)
            else:
                yield _not_an_object(line, base + start, record)
    return len(data)


def _not_an_object(line: int, offset: int, record: object) -> Item:
    return Item(line, offset, None, f"a record must be a JSON object, not {type(record).__name__}")


def _skip_space(data: bytes, start: int) -> int:
    while start < len(data) and data[start] in b" \t\r\n":
        start += 1
    return start
