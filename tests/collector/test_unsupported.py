"""Protocol details: a Pinpoint operation Homing does not serve, and 405's Allow header."""

from __future__ import annotations

import importlib.util
from importlib.machinery import SourceFileLoader
from pathlib import Path
from typing import Any

import httpx
import pytest

from homing_collector import pinpoint
from homing_collector.routes import OPERATIONS
from tests.conftest import App, LiveCollector

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app(collector: LiveCollector) -> App:
    return collector.create_app("unsupported")


def test_the_committed_table_is_botocores() -> None:
    loader = SourceFileLoader("pinpoint_operations", str(ROOT / "scripts/pinpoint-operations"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    script: Any = importlib.util.module_from_spec(spec)
    loader.exec_module(script)
    table = (ROOT / "collector/homing_collector/pinpoint_operations.tsv").read_text()
    assert table == "\n".join(script.rows()) + "\n", "run scripts/pinpoint-operations"
    served = {op.name for op in OPERATIONS} & {op.name for op in pinpoint.OPERATIONS}
    for op in OPERATIONS:
        if op.name in served:
            listed = next(p for p in pinpoint.OPERATIONS if p.name == op.name)
            assert listed.method == op.method, op.name


def test_an_unserved_pinpoint_operation_is_named(collector: LiveCollector, app: App) -> None:
    admin = collector.client(app.admin)
    with pytest.raises(admin.exceptions.NotFoundException) as info:
        admin.list_journeys(ApplicationId=app.id)
    message = info.value.response["Error"]["Message"]
    assert message == "ListJourneys is an Amazon Pinpoint operation that Homing does not serve yet"
    with pytest.raises(admin.exceptions.NotFoundException, match="GetSegmentExportJobs"):
        admin.get_segment_export_jobs(ApplicationId=app.id, SegmentId="s")
    response = httpx.get(f"{collector.url}/v1/apps/{app.id}/jobs/export")
    assert response.status_code == 404 and "GetExportJobs" in response.json()["Message"]


def test_an_unknown_path_is_not_an_operation(collector: LiveCollector) -> None:
    response = httpx.get(f"{collector.url}/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["x-amzn-ErrorType"] == "NotFoundException"
    assert response.json()["Message"] == "No route matches GET /v1/nothing-here"


def test_405_lists_every_allowed_method(collector: LiveCollector, app: App) -> None:
    for path, allowed in (
        (f"/v1/apps/{app.id}/endpoints/e", "DELETE, GET, HEAD, PUT"),
        ("/v1/apps", "GET, HEAD, POST"),
        (f"/v1/apps/{app.id}/events", "POST"),
    ):
        response = httpx.patch(collector.url + path)
        assert response.status_code == 405, path
        assert response.headers["Allow"] == allowed, path
        assert response.headers["x-amzn-ErrorType"] == "MethodNotAllowedException"
        assert allowed in response.json()["Message"]
