from __future__ import annotations

import httpx

from tests.conftest import LiveCollector


def test_healthz(collector: LiveCollector) -> None:
    response = httpx.get(collector.url + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
