"""A campaign whose segment is an imported one: an upload with RegisterEndpoints and
DefineSegment makes the segment, and an IMMEDIATE campaign on it pushes to exactly its
members, each once, on a live collector."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx

from tests.collector.test_campaign_runs import (
    add_endpoints,
    immediate,
    pushes,
    send_events,
    wait_for_activity,
)
from tests.conftest import App, LiveCollector


def upload(collector: LiveCollector, app: App, body: bytes, name: str) -> str:
    """Import `body` (CSV) as the segment `name`; its id once the job completed."""
    response = httpx.post(
        f"{collector.url}/v1/apps/{app.id}/jobs/import-upload",
        params={
            "format": "CSV",
            "segment-name": name,
            "register-endpoints": "true",
            "define-segment": "true",
        },
        content=body,
        headers={"Authorization": f"Bearer {app.admin.token}"},
    )
    assert response.status_code == 201, response.text
    admin = collector.client(app.admin)
    deadline = time.monotonic() + 60
    while True:
        job = admin.get_import_job(ApplicationId=app.id, JobId=response.json()["Id"])
        job = job["ImportJobResponse"]
        if job["JobStatus"] in ("COMPLETED", "FAILED"):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["JobStatus"] == "COMPLETED" and job["TotalFailures"] == 0, job
    segments = admin.get_segments(ApplicationId=app.id)["SegmentsResponse"]["Item"]
    (segment,) = [s for s in segments if s.get("Name") == name]
    assert segment["SegmentType"] == "IMPORT"
    return segment["Id"]  # type: ignore[no-any-return]


def csv(rows: list[tuple[str, str, str, str]]) -> bytes:
    lines = ["Id,ChannelType,Address,Demographic.Platform,User.UserId,Attributes.plan"]
    lines += [f"{i},GCM,{address},{platform},{user},pro" for i, address, platform, user in rows]
    return ("\n".join(lines) + "\n").encode()


def test_a_campaign_on_an_imported_segment_reaches_exactly_its_members_once(
    collector: LiveCollector,
) -> None:
    app = collector.create_app("imported-campaign")
    admin: Any = collector.client(app.admin)
    # Endpoints the file does not name (but one): not members, never pushed.
    outside = add_endpoints(admin, app, 30, prefix="old")
    rows = [(f"imp-{i:03d}", f"token-{i}", "android" if i % 2 else "ios", f"u{i}")
            for i in range(60)]  # fmt: skip
    rows.append(rows[0])  # a row twice: one member
    rows.append(("old-00003", "token-old-3", "ios", "u-old"))  # an existing endpoint, updated
    segment_id = upload(collector, app, csv(rows), "imported")
    imported = {row[0] for row in rows}
    assert len(imported) == 61

    campaign = immediate(admin, app, segment_id)
    activity = wait_for_activity(admin, app, campaign["Id"])
    assert pushes(collector, app.id, campaign["Id"]) == Counter(dict.fromkeys(imported, 1))
    assert activity["TotalEndpointCount"] == activity["SuccessfulEndpointCount"] == 61
    sends = send_events(collector, app.id)
    assert len(sends) == 61
    assert set(outside) - imported  # the other endpoints were there, and got nothing

    # A second import into the segment replaces its members: a new campaign reaches those.
    again = httpx.post(
        f"{collector.url}/v1/apps/{app.id}/jobs/import-upload",
        params={
            "format": "CSV",
            "segment-id": segment_id,
            "register-endpoints": "true",
            "define-segment": "true",
        },
        content=csv(rows[10:20]),
        headers={"Authorization": f"Bearer {app.admin.token}"},
    )
    assert again.status_code == 201, again.text
    deadline = time.monotonic() + 60
    while True:
        job = admin.get_import_job(ApplicationId=app.id, JobId=again.json()["Id"])
        if job["ImportJobResponse"]["JobStatus"] in ("COMPLETED", "FAILED"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job["ImportJobResponse"]["JobStatus"] == "COMPLETED", job
    second = immediate(admin, app, segment_id)
    wait_for_activity(admin, app, second["Id"])
    assert pushes(collector, app.id, second["Id"]) == Counter(
        dict.fromkeys((row[0] for row in rows[10:20]), 1)
    )
    # The first campaign sent nothing more.
    assert pushes(collector, app.id, campaign["Id"]) == Counter(dict.fromkeys(imported, 1))


def test_a_campaign_on_a_filter_of_an_imported_segment_reaches_its_filtered_members(
    collector: LiveCollector,
) -> None:
    app = collector.create_app("imported-filtered")
    admin: Any = collector.client(app.admin)
    add_endpoints(admin, app, 20, prefix="old")  # android ones too, outside the import
    rows = [(f"imp-{i:03d}", f"token-{i}", "android" if i % 3 == 0 else "ios", f"u{i}")
            for i in range(45)]  # fmt: skip
    imported_id = upload(collector, app, csv(rows), "imported")
    group = {
        "SourceSegments": [{"Id": imported_id}],
        "SourceType": "ANY",
        "Type": "ALL",
        "Dimensions": [{"Demographic": {"Platform": {"Values": ["android"]}}}],
    }
    filtered = admin.create_segment(
        ApplicationId=app.id,
        WriteSegmentRequest={"Name": "imported android",
                             "SegmentGroups": {"Include": "ALL", "Groups": [group]}},
    )["SegmentResponse"]["Id"]  # fmt: skip
    campaign = immediate(admin, app, filtered)
    wait_for_activity(admin, app, campaign["Id"])
    android = {row[0] for row in rows if row[2] == "android"}
    assert len(android) == 15
    assert pushes(collector, app.id, campaign["Id"]) == Counter(dict.fromkeys(android, 1))
