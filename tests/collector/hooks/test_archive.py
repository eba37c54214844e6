"""Reading Firehose-style archives: gzip or plain, one record a line or concatenated,
streamed, with every refusal placed by line and byte offset."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from homing_collector.hooks.archive import Item, read_archive, read_stream


def record(n: int, text: str = "") -> dict[str, Any]:
    return {"event_type": "Played", "event_timestamp": n, "client": {"client_id": f"c{n}"},
            "attributes": {"text": text}}  # fmt: skip


RECORDS = [record(n) for n in range(5)]


class CountingReader:
    """A stream that counts what was read from it."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.read_bytes = 0

    def read(self, size: int, /) -> bytes:
        chunk = self._inner.read(size)
        self.read_bytes += len(chunk)
        return chunk


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def concatenated(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) for r in records)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("layout", [ndjson, concatenated])
def test_files_gzip_or_plain_in_either_layout(tmp_path: Path, compress: bool, layout: Any) -> None:
    data = layout(RECORDS)
    path = tmp_path / "part-0001"
    path.write_bytes(gzip.compress(data) if compress else data)
    items = list(read_archive(path))
    assert [item.record for item in items] == RECORDS
    assert not any(item.error for item in items)
    for item in items:  # each offset points at its record in the uncompressed file
        assert data[item.offset :].startswith(orjson.dumps(item.record))
    lines = [item.line for item in items]
    assert lines == ([1, 2, 3, 4, 5] if layout is ndjson else [1] * 5)


def test_bad_lines_are_refused_one_by_one_and_the_rest_read() -> None:
    data = (
        orjson.dumps(RECORDS[0]) + b"\n"
        + b"\n"  # blank lines are skipped
        + b'{"event_type": "cut short\n'
        + b"[1, 2]\n"
        + b"42\r\n"
        + orjson.dumps(RECORDS[1]) + b"\r\n"
        + b'{"a":1,,}' + orjson.dumps(RECORDS[2]) + b"\n"
        + orjson.dumps(RECORDS[3])  # no newline at the end
    )  # fmt: skip
    items = list(read_stream(io.BytesIO(data)))
    assert [(i.line, i.record is not None) for i in items] == [
        (1, True), (3, False), (4, False), (5, False), (6, True), (7, False), (7, True), (8, True),
    ]  # fmt: skip
    errors = {i.line: i.error for i in items if i.error}
    assert errors[3].startswith("not valid JSON")
    assert errors[4] == "a record must be a JSON object, not list"
    assert errors[5] == "a record must be a JSON object, not int"
    assert errors[7].startswith("not valid JSON")
    assert [i.record for i in items if i.record] == RECORDS[:4]
    assert data[items[4].offset :].startswith(orjson.dumps(RECORDS[1]))


def test_braces_inside_strings_do_not_split_a_record() -> None:
    tricky = [record(1, "a}{b"), record(2, "}{"), record(3, '"}  {"'), record(4, "}{}{")]
    for data in (concatenated(tricky), ndjson(tricky)):
        items = list(read_stream(io.BytesIO(data), chunk_bytes=7, window_bytes=256))
        assert [item.record for item in items] == tricky


def test_a_long_concatenated_file_is_streamed_not_read_whole() -> None:
    many = [record(n, "x" * 50) for n in range(2000)]
    for data in (concatenated(many), ndjson(many)):
        reader = CountingReader(data)
        items = read_stream(reader, chunk_bytes=4096, window_bytes=16384)
        first = next(items)
        assert first.record == many[0]
        assert reader.read_bytes < 32768 < len(data)
        rest = list(items)
        assert [item.record for item in rest] == many[1:]


def test_a_corrupt_stretch_in_a_concatenated_file_is_skipped() -> None:
    data = concatenated(RECORDS[:2]) + b'{"broken": ' + b"}" + concatenated(RECORDS[2:])
    items = list(read_stream(io.BytesIO(data), chunk_bytes=16, window_bytes=256))
    assert [i.record for i in items if i.record] == RECORDS
    assert [i.error.split(":")[0] for i in items if i.error] == ["not valid JSON"]


def test_a_line_with_no_record_at_all_is_dropped_in_bounded_memory() -> None:
    data = b"x" * 100_000 + b"\n" + orjson.dumps(RECORDS[0]) + b"\n"
    items = list(read_stream(io.BytesIO(data), chunk_bytes=1000, window_bytes=4000))
    assert items[-1] == Item(2, 100_001, RECORDS[0])
    assert all(not item.record for item in items[:-1])
    assert items[0].error.startswith("no JSON record in")


def test_a_truncated_gzip_file_reports_where_it_ends(tmp_path: Path) -> None:
    packed = gzip.compress(ndjson([record(n, "y" * 100) for n in range(200)]))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    items = list(read_archive(path))
    assert items[-1].error.startswith("the file cannot be read further")
    assert all(item.record for item in items[:-1])


LAYOUT = st.sampled_from([b"", b"\n", b"\r\n", b" ", b"\n\n"])


@given(
    texts=st.lists(st.text(max_size=30), max_size=30),
    joins=st.lists(LAYOUT, min_size=30, max_size=30),
    chunk=st.integers(1, 300),
    window=st.integers(512, 1000),  # at least a record: records are at most ~300 bytes
)
def test_any_layout_and_chunking_reads_every_record(
    texts: list[str], joins: list[bytes], chunk: int, window: int
) -> None:
    records = [record(n, text) for n, text in enumerate(texts)]
    data = b"".join(orjson.dumps(r) + join for r, join in zip(records, joins, strict=False))
    items = list(read_stream(io.BytesIO(data), chunk_bytes=chunk, window_bytes=window))
    assert [item.error for item in items if item.error] == []
    assert [item.record for item in items] == records
    for item in items:
        assert data[item.offset :].startswith(orjson.dumps(item.record))
        assert data[: item.offset].count(b"\n") + 1 == item.line


@given(data=st.binary(max_size=400), chunk=st.integers(1, 50))
def test_any_bytes_give_records_or_refusals_never_a_crash(data: bytes, chunk: int) -> None:
    items = list(read_stream(io.BytesIO(data), chunk_bytes=chunk, window_bytes=128))
    for item in items:
        assert (item.record is None) == bool(item.error)
        assert 0 <= item.offset <= len(data)
        assert 1 <= item.line <= data.count(b"\n") + 1
