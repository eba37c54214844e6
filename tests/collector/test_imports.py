"""Imported segments: Pinpoint's import job operations through boto3, Homing's upload
route and `homing-collector segments import`, against a live `homing-collector serve`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from homing_collector.campaigns.import_files import derived_id
from homing_collector.campaigns.resolve import segment_endpoints
from homing_collector.storage.sqlite import SQLiteStorage
from tests.conftest import App, LiveCollector

# The tests here start their own collectors, on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_backends

CSV = (
    "ChannelType,Address,Id,User.UserId,User.UserAttributes.name,Attributes.plan,"
    "Attributes.plan,Metrics.score,Demographic.Platform,Location.Country,Location.Latitude\n"
    "CUSTOM,addr-1,csv-1,csv-user-1,Ann,pro,team,3,ios,FR,48.85\n"
    'CUSTOM,"addr,2",csv-2,csv-user-2,,free,,1.5,android,DE,\n'
    "CUSTOM,addr-3,csv-3,,,,,not-a-number,,,\n"
    "PUSH,addr-4,csv-4,,,,,,,,91\n"
    "SMS,+15550100,,,,,,,,US,\n"
    "CUSTOM,addr-6,csv/6,,,,,,,,\n"
    "CUSTOM,addr-7\n"
)


@pytest.fixture(scope="module")
def import_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("imports")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, import_dir: Path) -> Iterator[LiveCollector]:
    """A collector that may read files in `import_dir`."""
    db = tmp_path_factory.mktemp("collector") / "collector.db"
    live = LiveCollector(db, extra_args=("--import-dir", str(import_dir))).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def app(served: LiveCollector) -> App:
    return served.create_app("imports")


@pytest.fixture(scope="module")
def admin(served: LiveCollector, app: App) -> Any:
    return served.client(app.admin)


def finished(admin: Any, app_id: str, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = admin.get_import_job(ApplicationId=app_id, JobId=job_id)["ImportJobResponse"]
        if job["JobStatus"] in ("COMPLETED", "FAILED"):
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def start_job(admin: Any, app_id: str, request: dict[str, Any]) -> dict[str, Any]:
    response = admin.create_import_job(ApplicationId=app_id, ImportJobRequest=request)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 201
    job = response["ImportJobResponse"]
    assert job["JobStatus"] == "CREATED" and job["Type"] == "IMPORT"
    return job  # type: ignore[no-any-return]


def members(db: Path, app_id: str, segment_id: str, version: int | None = None) -> set[str]:
    """The segment's endpoints as the campaign engine resolves them."""

    async def run() -> set[str]:
        storage = SQLiteStorage(db)
        await storage.start()
        try:
            now = datetime.now(timezone.utc)
            return {
                endpoint["Id"]
                async for endpoint in segment_endpoints(
                    storage, app_id, segment_id, version, now=now, chunk=2
                )
            }
        finally:
            await storage.close()

    return asyncio.run(run())


def test_boto3_imports_a_csv_file_as_a_segment(
    served: LiveCollector, admin: Any, app: App, import_dir: Path
) -> None:
    (import_dir / "customers.csv").write_text(CSV)
    request = {
        "Format": "CSV",
        "S3Url": (import_dir / "customers.csv").as_uri(),
        "RoleArn": "arn:aws:iam::123456789012:role/import",
        "DefineSegment": True,
        "SegmentName": "customers",
    }
    created = start_job(admin, app.id, request)
    assert created["Definition"] == request
    job = finished(admin, app.id, created["Id"])
    assert job["JobStatus"] == "COMPLETED", job
    assert (job["TotalProcessed"], job["TotalFailures"]) == (7, 4)
    assert job["TotalPieces"] == job["CompletedPieces"] == 1 and job["FailedPieces"] == 0
    assert job["Failures"] == [
        "row 4: Metrics.score: 'not-a-number' is not a number",
        "row 5: Location.Latitude: must be between -90 and 90",
        'row 7: Id: must not contain "/": the id is part of the URL of its routes',
        "row 8: has 2 cells; the header has 11",
    ]
    assert job["CompletionDate"] >= job["CreationDate"]

    endpoint = admin.get_endpoint(ApplicationId=app.id, EndpointId="csv-1")["EndpointResponse"]
    assert endpoint["Attributes"] == {"plan": ["pro", "team"]}
    assert endpoint["User"] == {"UserId": "csv-user-1", "UserAttributes": {"name": ["Ann"]}}
    assert endpoint["Metrics"] == {"score": 3.0}
    assert endpoint["Location"] == {"Country": "FR", "Latitude": 48.85}
    assert endpoint["Demographic"] == {"Platform": "ios"}
    second = admin.get_endpoint(ApplicationId=app.id, EndpointId="csv-2")["EndpointResponse"]
    assert second["Address"] == "addr,2" and second["Attributes"] == {"plan": ["free"]}

    (segment,) = admin.get_segments(ApplicationId=app.id)["SegmentsResponse"]["Item"]
    assert segment["SegmentType"] == "IMPORT" and segment["Name"] == "customers"
    assert segment["ImportDefinition"] == {
        "ChannelCounts": {"CUSTOM": 2, "SMS": 1},
        "ExternalId": "",
        "Format": "CSV",
        "RoleArn": request["RoleArn"],
        "S3Url": request["S3Url"],
        "Size": 3,
    }
    assert admin.get_segment(ApplicationId=app.id, SegmentId=segment["Id"])["SegmentResponse"] == {
        **segment
    }
    jobs = admin.get_segment_import_jobs(ApplicationId=app.id, SegmentId=segment["Id"])
    assert [j["Id"] for j in jobs["ImportJobsResponse"]["Item"]] == [job["Id"]]
    sms = derived_id("SMS", "+15550100")  # the row had no Id
    assert members(served.db, app.id, segment["Id"]) == {"csv-1", "csv-2", sms}
    assert (
        admin.get_endpoint(ApplicationId=app.id, EndpointId=sms)["EndpointResponse"]["Address"]
        == "+15550100"
    )


def test_a_json_import_makes_a_new_version_of_an_imported_segment(
    served: LiveCollector, admin: Any, app: App, import_dir: Path
) -> None:
    lines = [
        {"Id": "json-1", "ChannelType": "CUSTOM", "Address": "j1", "Attributes": {"k": ["v"]}},
        {"Id": "json-2", "ChannelType": "GCM", "Address": "j2", "User": {"UserId": "json-u"}},
        {"Id": "json-3", "ChannelType": "FAX"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n[1, 2]\n{oops\n\n"
    (import_dir / "first.json").write_text(text)
    base = {"Format": "JSON", "RoleArn": "", "SegmentName": "json-people"}
    job = start_job(admin, app.id, {**base, "S3Url": (import_dir / "first.json").as_uri()})
    job = finished(admin, app.id, job["Id"])
    assert job["JobStatus"] == "COMPLETED" and job["TotalProcessed"] == 5
    assert job["Failures"][0].startswith("row 3: ChannelType: must be one of ADM,")
    assert job["Failures"][1:] == [
        "row 4: must be a JSON object, one endpoint per line",
        job["Failures"][2],
    ] and job["Failures"][2].startswith("row 5: is not valid JSON")
    segments = admin.get_segments(ApplicationId=app.id)["SegmentsResponse"]["Item"]
    segment = next(s for s in segments if s.get("Name") == "json-people")
    assert segment["ImportDefinition"]["ChannelCounts"] == {"CUSTOM": 1, "GCM": 1}
    assert members(served.db, app.id, segment["Id"]) == {"json-1", "json-2"}

    (import_dir / "second.json").write_text(json.dumps({"Id": "json-9", "Address": "x"}) + "\n")
    again = {"Format": "JSON", "RoleArn": "", "SegmentId": segment["Id"]}
    job = start_job(admin, app.id, {**again, "S3Url": (import_dir / "second.json").as_uri()})
    assert finished(admin, app.id, job["Id"])["JobStatus"] == "COMPLETED"
    latest = admin.get_segment(ApplicationId=app.id, SegmentId=segment["Id"])["SegmentResponse"]
    assert latest["Version"] == 2 and latest["Name"] == "json-people"
    assert latest["ImportDefinition"]["Size"] == 1
    assert members(served.db, app.id, segment["Id"]) == {"json-9"}
    assert members(served.db, app.id, segment["Id"], 1) == {"json-1", "json-2"}
    jobs = admin.get_segment_import_jobs(ApplicationId=app.id, SegmentId=segment["Id"])
    assert len(jobs["ImportJobsResponse"]["Item"]) == 2

    renamed = admin.update_segment(
        ApplicationId=app.id, SegmentId=segment["Id"], WriteSegmentRequest={"Name": "renamed"}
    )["SegmentResponse"]
    assert (renamed["Version"], renamed["Name"], renamed["SegmentType"]) == (3, "renamed", "IMPORT")
    assert renamed["ImportDefinition"] == latest["ImportDefinition"]
    assert members(served.db, app.id, segment["Id"]) == {"json-9"}
    with pytest.raises(admin.exceptions.BadRequestException, match="Dimensions: an imported"):
        admin.update_segment(
            ApplicationId=app.id,
            SegmentId=segment["Id"],
            WriteSegmentRequest={"Dimensions": {"Demographic": {"Platform": {"Values": ["x"]}}}},
        )
    # A dimensional segment based on it filters its members.
    based = admin.create_segment(
        ApplicationId=app.id,
        WriteSegmentRequest={
            "SegmentGroups": {
                "Groups": [{"SourceSegments": [{"Id": segment["Id"], "Version": 1}]}],
            },
            "Dimensions": {"Demographic": {"Channel": {"Values": ["GCM"]}}},
        },
    )["SegmentResponse"]
    assert members(served.db, app.id, based["Id"]) == {"json-2"}

    admin.delete_segment(ApplicationId=app.id, SegmentId=segment["Id"])
    with pytest.raises(admin.exceptions.NotFoundException):
        admin.get_segment_import_jobs(ApplicationId=app.id, SegmentId=segment["Id"])


def test_user_id_rows_stand_for_the_users_endpoints(
    served: LiveCollector, admin: Any, app: App
) -> None:
    for endpoint_id in ("u-a", "u-b"):
        admin.update_endpoint(
            ApplicationId=app.id,
            EndpointId=endpoint_id,
            EndpointRequest={"ChannelType": "CUSTOM", "User": {"UserId": "listed-user"}},
        )
    response = httpx.post(
        f"{served.url}/v1/apps/{app.id}/jobs/import-upload",
        params={"format": "CSV", "segment-name": "by-user"},
        content=b"User.UserId\nlisted-user\nnobody\n",
        headers={"Authorization": f"Bearer {app.admin.token}"},
    )
    assert response.status_code == 201, response.text
    job = finished(admin, app.id, response.json()["Id"])
    assert job["Failures"] == [
        "row 3: User.UserId: user 'nobody' has no endpoints in this application"
    ]
    segments = admin.get_segments(ApplicationId=app.id)["SegmentsResponse"]["Item"]
    segment = next(s for s in segments if s.get("Name") == "by-user")
    assert segment["ImportDefinition"]["Size"] == 2
    assert members(served.db, app.id, segment["Id"]) == {"u-a", "u-b"}


def test_the_upload_route_takes_the_file_as_the_body_bearer_or_sigv4(
    served: LiveCollector, admin: Any, app: App
) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{served.url}/v1/apps/{app.id}/jobs/import-upload?format=JSON&segment-name=uploaded"
    body = b'{"Id": "up-1", "ChannelType": "CUSTOM", "Address": "a"}\n'
    signed = AWSRequest(method="POST", url=url, data=body)
    creds = Credentials(app.admin.access_key_id, app.admin.secret_access_key)
    SigV4Auth(creds, "mobiletargeting", "eu-west-1").add_auth(signed)
    response = httpx.post(url, content=body, headers=dict(signed.headers))
    assert response.status_code == 201, response.text
    job = finished(admin, app.id, response.json()["Id"])
    assert job["JobStatus"] == "COMPLETED" and job["Definition"]["S3Url"] == "upload://body"

    tampered = httpx.post(url, content=body + b"\n", headers=dict(signed.headers))
    assert tampered.status_code == 403, tampered.text

    bearer = {"Authorization": f"Bearer {app.admin.token}"}
    for params, content, message in [
        ("", body, "format: is required"),
        ("?format=XML", body, "format: "),
        ("?format=CSV", b"", "The body is empty"),
        ("?format=CSV&segment-id=nope", b"Id\nx\n", "SegmentId: segment nope does not exist"),
        ("?format=CSV&define-segment=false&register-endpoints=false", b"Id\nx\n", "nothing"),
    ]:
        response = httpx.post(
            f"{served.url}/v1/apps/{app.id}/jobs/import-upload{params}",
            content=content,
            headers=bearer,
        )
        assert response.status_code == 400, (params, response.text)
        assert message in response.json()["Message"], response.text
    gzipped = httpx.post(url, content=body, headers={**bearer, "Content-Encoding": "gzip"})
    assert gzipped.status_code == 400 and "not compressed" in gzipped.json()["Message"]
    ingest = {"Authorization": f"Bearer {app.ingest.token}"}
    assert httpx.post(url, content=body, headers=ingest).status_code == 403


def test_s3_urls_and_files_outside_the_import_dir_are_400s_that_say_how_to_upload(
    served: LiveCollector, admin: Any, app: App, import_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("Id\nx\n")
    (import_dir / "sub").mkdir(exist_ok=True)
    (import_dir / "link.csv").unlink(missing_ok=True)
    (import_dir / "link.csv").symlink_to(outside)
    for url, rule in [
        ("s3://bucket/customers.csv", "Homing reads no S3"),
        (outside.as_uri(), "outside the import directory"),
        ((import_dir / "link.csv").as_uri(), "outside the import directory"),
        (f"file://{import_dir}/../{tmp_path.name}/outside.csv", "outside the import directory"),
        ((import_dir / "missing.csv").as_uri(), "no file"),
        ((import_dir / "sub").as_uri(), "names a directory"),
        ("file://elsewhere/x.csv", "must be file:///PATH"),
    ]:
        with pytest.raises(admin.exceptions.BadRequestException) as raised:
            admin.create_import_job(
                ApplicationId=app.id,
                ImportJobRequest={
                    "Format": "CSV",
                    "S3Url": url,
                    "RoleArn": "",
                    "DefineSegment": True,
                },
            )
        message = raised.value.response["Error"]["Message"]
        assert message.startswith("S3Url: ") and rule in message, (url, message)
        if rule != "names a directory" and rule != "no file":
            assert f"/v1/apps/{app.id}/jobs/import-upload" in message, message
    with pytest.raises(admin.exceptions.BadRequestException, match="Format: 'XML' is not one"):
        admin.create_import_job(
            ApplicationId=app.id,
            ImportJobRequest={"Format": "XML", "S3Url": outside.as_uri(), "RoleArn": ""},
        )


def test_without_an_import_dir_file_urls_are_refused(collector: LiveCollector) -> None:
    app = collector.create_app("no-import-dir")
    admin = collector.client(app.admin)
    with pytest.raises(admin.exceptions.BadRequestException, match="--import-dir") as raised:
        admin.create_import_job(
            ApplicationId=app.id,
            ImportJobRequest={"Format": "CSV", "S3Url": "file:///etc/hosts", "RoleArn": ""},
        )
    assert "homing-collector segments import" in raised.value.response["Error"]["Message"]


def test_a_file_that_defines_no_member_fails_and_defines_no_segment(
    served: LiveCollector, admin: Any, app: App, import_dir: Path
) -> None:
    (import_dir / "bad.csv").write_text("Id,ChannelType\nb-1,NOPE\n")
    (import_dir / "header.csv").write_text("Id,Colour\nb-1,red\n")
    (import_dir / "latin1.csv").write_bytes("Id,Address\nb-1,caf\xe9\n".encode("latin-1"))
    before = len(admin.get_segments(ApplicationId=app.id)["SegmentsResponse"]["Item"])
    for name, failure in [
        ("bad.csv", "no endpoint definition was imported, so no segment"),
        ("header.csv", "row 1, the header: column 2, 'Colour', is not an endpoint field"),
        ("latin1.csv", "the file is not UTF-8"),
    ]:
        request = {"Format": "CSV", "S3Url": (import_dir / name).as_uri(), "RoleArn": ""}
        job = start_job(admin, app.id, {**request, "SegmentName": name})
        job = finished(admin, app.id, job["Id"])
        assert job["JobStatus"] == "FAILED", job
        assert job["FailedPieces"] == 1 and failure in job["Failures"][-1], job
    after = admin.get_segments(ApplicationId=app.id)["SegmentsResponse"]["Item"]
    assert len(after) == before


def test_get_import_jobs_pages_oldest_first(served: LiveCollector, admin: Any) -> None:
    app = served.create_app("paging")
    admin = served.client(app.admin)
    ids = []
    for i in range(3):
        response = httpx.post(
            f"{served.url}/v1/apps/{app.id}/jobs/import-upload",
            params={"format": "CSV", "define-segment": "false"},
            content=f"Id,ChannelType\np-{i},CUSTOM\n".encode(),
            headers={"Authorization": f"Bearer {app.admin.token}"},
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["Id"])
    seen, token = [], None
    while True:
        page = admin.get_import_jobs(
            ApplicationId=app.id, PageSize="2", **({"Token": token} if token else {})
        )
        seen += [job["Id"] for job in page["ImportJobsResponse"]["Item"]]
        token = page["ImportJobsResponse"].get("NextToken")
        if not token:
            break
    assert seen == ids
    with pytest.raises(admin.exceptions.NotFoundException):
        admin.get_import_job(ApplicationId=app.id, JobId="no-such-job")


def test_the_cli_imports_a_file(served: LiveCollector, app: App, tmp_path: Path) -> None:
    path = tmp_path / "cli people.csv"
    path.write_text("Id,ChannelType,Address\ncli-1,CUSTOM,a\ncli-2,NOPE,b\n")
    result = cli("--db", str(served.db), "segments", "import", app.id, str(path), "--json")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["JobStatus"] == "COMPLETED" and job["TotalFailures"] == 1
    assert job["Definition"]["S3Url"] == path.resolve().as_uri()
    assert job["Definition"]["SegmentName"] == "cli people.csv"
    admin = served.client(app.admin)
    assert admin.get_import_job(ApplicationId=app.id, JobId=job["Id"])["ImportJobResponse"] == job

    result = cli("--db", str(served.db), "segments", "import", app.id, str(path), "--name", "x")
    assert result.returncode == 0 and "1 of 2 rows imported" in result.stdout
    assert "row 3: ChannelType: must be one of" in result.stdout

    (tmp_path / "bad.csv").write_text("Nope\n1\n")
    for args, code, said in [
        (["nope-app", str(path)], 1, "no application nope-app"),
        ([app.id, str(tmp_path / "missing.csv")], 1, "cannot read"),
        ([app.id, str(tmp_path / "bad.csv")], 1, ""),
        ([app.id, str(path), "--segment", "nope"], 1, "--segment: segment nope does not exist"),
        ([app.id, str(path), "--format", "XML"], 2, "invalid choice"),
    ]:
        result = cli("--db", str(served.db), "segments", "import", *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert said in result.stderr, result.stderr
    result = cli("--db", str(served.db), "segments", "import", app.id, str(tmp_path / "bad.csv"))
    assert "FAILED" in result.stdout and "'Nope', is not an endpoint field" in result.stdout


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "homing_collector", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- large files and crashes ---------------------------------------------------------------


def rss_peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def big_file(path: Path, size: int, pad: int) -> int:
    """Newline-delimited JSON endpoints of about `pad` bytes each, `size` bytes in all;
    return how many."""
    count = 0
    with path.open("wb") as out:
        written = 0
        while written < size:
            line = (
                json.dumps(
                    {"Id": f"big-{count}", "ChannelType": "CUSTOM", "Address": "x" * pad}
                ).encode()
                + b"\n"
            )
            out.write(line)
            written += len(line)
            count += 1
    return count


def upload(collector: LiveCollector, app: App, path: Path, **params: str) -> httpx.Response:
    def chunks() -> Iterator[bytes]:
        with path.open("rb") as file:
            while chunk := file.read(1 << 16):
                yield chunk

    return httpx.post(
        f"{collector.url}/v1/apps/{app.id}/jobs/import-upload",
        params={"format": "JSON", "segment-name": path.name, **params},
        content=chunks(),
        headers={"Authorization": f"Bearer {app.admin.token}"},
        timeout=120,
    )


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_50_mb_upload_streams_without_the_server_holding_it(
    start_collector: Any, tmp_path: Path
) -> None:
    collector = start_collector()
    app = collector.create_app("big")
    admin = collector.client(app.admin)
    path = tmp_path / "big.json"
    count = big_file(path, 50 << 20, pad=900)
    assert collector.process is not None
    pid = collector.process.pid
    before = rss_peak_kb(pid)
    # Members only: stored endpoints would fill the storage's caches (SQLite's pages, the
    # endpoint bodies), which are bounded but large, and are not what is measured here.
    response = upload(collector, app, path, **{"register-endpoints": "false"})
    assert response.status_code == 201, response.text
    job = finished(admin, app.id, response.json()["Id"], timeout=300)
    assert job["JobStatus"] == "COMPLETED", job
    assert (job["TotalProcessed"], job["TotalFailures"]) == (count, 0)
    assert job["TotalPieces"] == job["CompletedPieces"] == 7
    (segment,) = admin.get_segments(ApplicationId=app.id)["SegmentsResponse"]["Item"]
    assert segment["ImportDefinition"]["Size"] == count
    grown_mb = (rss_peak_kb(pid) - before) / 1024
    # The file is 50 MB: a server that held it would grow by at least that much.
    assert grown_mb < 25, f"the server's peak memory grew by {grown_mb:.0f} MB"


def test_a_job_left_behind_by_a_killed_collector_is_failed(
    start_collector: Any, tmp_path: Path
) -> None:
    collector = start_collector()
    app = collector.create_app("crash")
    admin = collector.client(app.admin)
    path = tmp_path / "crash.json"
    big_file(path, 16 << 20, pad=20)
    response = upload(collector, app, path)
    assert response.status_code == 201, response.text
    job_id = response.json()["Id"]
    deadline = time.monotonic() + 30
    while (
        admin.get_import_job(ApplicationId=app.id, JobId=job_id)["ImportJobResponse"]["JobStatus"]
        != "PROCESSING"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    collector.stop(signal.SIGKILL)

    restarted = start_collector(collector.db)
    admin = restarted.client(app.admin)
    job = admin.get_import_job(ApplicationId=app.id, JobId=job_id)["ImportJobResponse"]
    assert job["JobStatus"] == "FAILED", job
    assert job["Failures"][-1] == "the collector stopped while the job ran; import the file again"
    assert job["FailedPieces"] >= 1 and job["TotalProcessed"] < 16 << 20
    assert not admin.get_segments(ApplicationId=app.id)["SegmentsResponse"]["Item"]


def test_a_stopped_collector_fails_its_running_job(start_collector: Any, tmp_path: Path) -> None:
    collector = start_collector()
    app = collector.create_app("stop")
    admin = collector.client(app.admin)
    path = tmp_path / "stop.json"
    big_file(path, 16 << 20, pad=20)
    response = upload(collector, app, path)
    assert response.status_code == 201, response.text
    assert collector.stop(signal.SIGTERM) == 0
    restarted = start_collector(collector.db)
    admin = restarted.client(app.admin)
    job = admin.get_import_job(ApplicationId=app.id, JobId=response.json()["Id"])
    assert job["ImportJobResponse"]["JobStatus"] in ("FAILED", "COMPLETED")
    if not collector.db_url:
        assert os.path.exists(collector.db)


def test_deleting_the_application_stops_its_import(start_collector: Any, tmp_path: Path) -> None:
    collector = start_collector()
    app = collector.create_app("doomed")
    admin = collector.client(app.admin)
    path = tmp_path / "doomed.json"
    big_file(path, 16 << 20, pad=20)
    response = upload(collector, app, path)
    assert response.status_code == 201, response.text
    while admin.get_import_job(ApplicationId=app.id, JobId=response.json()["Id"])[
        "ImportJobResponse"
    ]["JobStatus"] in ("CREATED",):
        time.sleep(0.01)
    root = collector.client(collector.root_key())
    root.delete_app(ApplicationId=app.id)
    time.sleep(1)  # the job's next batch finds the application gone
    for table in ("endpoints", "import_jobs", "import_members", "segments"):
        [(count,)] = collector.query(f"SELECT count(*) FROM {table} WHERE app_id = ?", app.id)
        assert count == 0, table


def test_with_workers_a_job_read_from_another_worker_is_not_taken_for_abandoned(
    start_collector: Any, tmp_path: Path
) -> None:
    collector = start_collector(None, "--workers", "2")
    app = collector.create_app("workers")
    path = tmp_path / "workers.json"
    count = big_file(path, 8 << 20, pad=20)
    response = upload(collector, app, path)
    assert response.status_code == 201, response.text
    url = f"{collector.url}/v1/apps/{app.id}/jobs/import/{response.json()['Id']}"
    headers = {"Authorization": f"Bearer {app.admin.token}", "Connection": "close"}
    statuses = set()
    deadline = time.monotonic() + 120
    while True:
        job = httpx.get(url, headers=headers).json()  # a new connection, any worker
        statuses.add(job["JobStatus"])
        if job["JobStatus"] in ("COMPLETED", "FAILED"):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    assert job["JobStatus"] == "COMPLETED", job
    assert job["TotalProcessed"] == count and "PROCESSING" in statuses
