"""Pinpoint's import file formats, read without a collector: each row checked with
UpdateEndpoint's rules, bad rows reported by number, the file never held whole."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homing_collector.campaigns.import_files import (
    MAX_LINE_BYTES,
    ImportFileError,
    ImportReader,
    derived_id,
)


def read(data: bytes, file_format: str, batch: int = 1000) -> tuple[list[Any], list[str]]:
    reader = ImportReader(io.BytesIO(data), file_format)
    good: list[Any] = []
    bad: list[str] = []
    done = False
    while not done:
        rows, messages, done = reader.batch(batch)
        good += rows
        bad += messages
    assert reader.position == len(data)
    return good, bad


# Header names are stripped of surrounding spaces ("Id, Address" is a common header). A
# NUL is refused in any stored string (test_a_nul_is_refused_in_either_format).
names = st.text(
    st.characters(codec="utf-8", exclude_characters=".\r\n\x00"), min_size=1, max_size=20
).filter(lambda name: name == name.strip() != "")
values = st.text(
    st.characters(codec="utf-8", exclude_characters="\r\n\x00"), min_size=1, max_size=30
)
endpoints = st.fixed_dictionaries(
    {"Id": st.text("abcdef0123456789-", min_size=1, max_size=12)},
    optional={
        "ChannelType": st.sampled_from(["CUSTOM", "GCM", "APNS"]),
        "Address": values,
        "Attributes": st.dictionaries(names, st.lists(values, min_size=1, max_size=3), max_size=3),
        "Metrics": st.dictionaries(
            names, st.floats(-1e6, 1e6).map(lambda x: round(x, 3)), max_size=2
        ),
        "Demographic": st.fixed_dictionaries({}, optional={"Platform": values, "Locale": values}),
    },
).map(lambda row: {k: v for k, v in row.items() if v != {}})  # a CSV cannot say {}


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    """One file with a column for each value, attributes repeated, as Pinpoint writes."""
    columns: list[str] = [
        "Id",
        "ChannelType",
        "Address",
        "Demographic.Platform",
        "Demographic.Locale",
    ]
    width: dict[str, int] = {}
    for row in rows:
        for name, listed in row.get("Attributes", {}).items():
            width[name] = max(width.get(name, 0), len(listed))
    metrics = sorted({name for row in rows for name in row.get("Metrics", {})})
    header = columns + [f"Attributes.{n}" for n in sorted(width) for _ in range(width[n])]
    header += [f"Metrics.{n}" for n in metrics]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = [row.get("Id", ""), row.get("ChannelType", ""), row.get("Address", "")]
        cells += [row.get("Demographic", {}).get(k, "") for k in ("Platform", "Locale")]
        for name in sorted(width):
            listed = row.get("Attributes", {}).get(name, [])
            cells += listed + [""] * (width[name] - len(listed))
        cells += [repr(row["Metrics"][n]) if n in row.get("Metrics", {}) else "" for n in metrics]
        writer.writerow(cells)
    return out.getvalue().encode()


def expected(row: dict[str, Any]) -> dict[str, Any]:
    """What the reader makes of a row: everything but its id."""
    return {k: v for k, v in row.items() if k != "Id"}


@settings(max_examples=60, deadline=None)
@given(st.lists(endpoints, min_size=1, max_size=8), st.integers(1, 5))
def test_csv_and_json_give_the_same_endpoints(rows: list[dict[str, Any]], batch: int) -> None:
    from_csv, bad_csv = read(to_csv(rows), "CSV", batch)
    text = "".join(json.dumps(row) + "\n" for row in rows).encode()
    from_json, bad_json = read(text, "JSON", batch)
    assert bad_csv == bad_json == []
    assert [(r.row, r.endpoint_id) for r in from_csv] == [
        (i + 2, row["Id"]) for i, row in enumerate(rows)
    ]
    assert [(r.row, r.endpoint_id) for r in from_json] == [
        (i + 1, row["Id"]) for i, row in enumerate(rows)
    ]
    for parsed_csv, parsed_json, row in zip(from_csv, from_json, rows, strict=True):
        want = expected(row)
        assert parsed_json.update == want
        assert {k: v for k, v in parsed_csv.update.items() if k != "Metrics"} == {
            k: v for k, v in want.items() if k != "Metrics"
        }
        assert parsed_csv.update.get("Metrics", {}) == pytest.approx(want.get("Metrics", {}))


def test_a_nul_is_refused_in_either_format() -> None:
    """PostgreSQL's text cannot hold a NUL: the row that has one is refused, naming its
    row and field, and the others are read."""
    rows = [{"Id": "a", "Address": "x\x00y"}, {"Id": "b", "Attributes": {"team": ["r\x00"]}},
            {"Id": "c", "Address": "fine"}]  # fmt: skip
    from_csv, bad_csv = read(to_csv(rows), "CSV")
    text = "".join(json.dumps(row) + "\n" for row in rows).encode()
    from_json, bad_json = read(text, "JSON")
    assert [r.endpoint_id for r in from_csv] == [r.endpoint_id for r in from_json] == ["c"]
    rule = "must not contain the NUL character (U+0000)"
    assert bad_json == [f"row 1: Address: {rule}", f"row 2: Attributes.team.0: {rule}"]
    assert bad_csv == [f"row 2: Address: {rule}", f"row 3: Attributes.team.0: {rule}"]


def test_csv_quoting_a_byte_order_mark_and_blank_lines() -> None:
    data = '\ufeffId,Address,Attributes.note\n\nq-1,"a,b","say ""hi"""\n\n'.encode()
    (row,), bad = read(data, "CSV")
    assert bad == [] and row.row == 3
    assert row.update == {"Address": "a,b", "Attributes": {"note": ['say "hi"']}}


def test_rows_without_an_id() -> None:
    data = b"ChannelType,Address,User.UserId\nSMS,+1555,\n,,user-1\nSMS,,\n,x,user-2\n"
    good, bad = read(data, "CSV")
    assert [(r.row, r.endpoint_id) for r in good] == [(2, derived_id("SMS", "+1555")), (3, None)]
    assert bad == [
        f"row {n}: Id: is required, unless the row gives ChannelType and Address (a new "
        "endpoint) or only User.UserId (every endpoint of that user)"
        for n in (4, 5)
    ]
    assert derived_id("SMS", "+1555") != derived_id("SMS", "+1556")


def test_bad_cells_name_the_row_the_field_and_the_rule() -> None:
    data = (
        b"Id,OptOut,Location.Longitude,Metrics.m,Attributes.a\n"
        b"r-2,SOME,,,\n"
        b"r-3,,181,,\n"
        b"r-4,,,nan,\n"
        b"r-5,,,," + b"x" * 101 + b"\n"
        b"r-6,ALL,,,\n"
    )
    good, bad = read(data, "CSV")
    assert [r.endpoint_id for r in good] == ["r-6"]
    assert bad[0] == "row 2: OptOut: must be one of ALL, NONE"
    assert bad[1] == "row 3: Location.Longitude: must be between -180 and 180"
    assert bad[2] == "row 4: Metrics.m: must be a finite number"
    assert bad[3].startswith("row 5: Attributes.a: a value is 101 characters; the limit is")


def test_a_scalar_column_may_not_repeat() -> None:
    _, bad = read(b"Id,Address,Address\nd-1,a,b\n", "CSV")
    assert bad == ["row 2: Address: is given twice; only attributes may repeat their column"]


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"Id,Demographic.Colour\n", "column 2, 'Demographic.Colour', is not an endpoint field"),
        (b"id\n", "column 1, 'id', is not an endpoint field"),
        (b"Id\nx\n\xff\n", "the file is not UTF-8"),
    ],
)
def test_a_file_that_cannot_be_read_raises(data: bytes, said: str) -> None:
    with pytest.raises(ImportFileError, match=said):
        read(data, "CSV")


def test_an_overlong_json_line_is_one_bad_row() -> None:
    data = b'{"Id": "a"}\n' + b"x" * (MAX_LINE_BYTES * 2 + 5) + b'\n{"Id": "b"}\n'
    good, bad = read(data, "JSON")
    assert [r.endpoint_id for r in good] == ["a", "b"]
    assert bad == [f"row 2: is longer than {MAX_LINE_BYTES} bytes"]


def test_an_overlong_csv_field_is_a_bad_row_not_the_whole_file() -> None:
    data = b"Id,Address\nok-1,a\nlong," + b"y" * 200_000 + b"\nok-2,b\n"
    good, bad = read(data, "CSV")
    assert [r.endpoint_id for r in good][:1] == ["ok-1"] and "ok-2" in [r.endpoint_id for r in good]
    assert bad and bad[0].startswith("row 3: is not valid CSV")


def test_a_line_of_a_pinpoint_export_imports_as_it_is() -> None:
    exported = {
        "ChannelType": "GCM",
        "Address": "device-token",
        "EndpointStatus": "ACTIVE",
        "OptOut": "NONE",
        "Location": {"Country": "US"},
        "Demographic": {"Platform": "android"},
        "EffectiveDate": "2024-01-01T00:00:00.000Z",
        "Attributes": {},
        "Metrics": {},
        "User": {},
        "ApplicationId": "pinpoint-app",
        "Id": "exported-1",
        "CohortId": "12",
        "CreationDate": "2023-01-01T00:00:00.000Z",
    }
    (row,), bad = read(json.dumps(exported).encode() + b"\n", "JSON")
    assert bad == [] and row.endpoint_id == "exported-1"
