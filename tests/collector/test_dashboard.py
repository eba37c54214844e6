"""The dashboard's page and assets as a live collector serves them (no browser needed)."""

from __future__ import annotations

import re

import httpx
import pytest

from homing_collector.dashboard import ASSETS, CONTENT_SECURITY_POLICY, CONTENT_TYPES, PAGE
from tests.conftest import LiveCollector

# XML namespace names are identifiers that no browser fetches; nothing else may name a host.
NAMESPACES = {"http://www.w3.org/2000/svg"}
URL = re.compile(r"""(?:https?:)?//[^\s"'`)<>]+""")


def asset_urls(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', page)


def test_the_page_is_served_with_a_strict_policy(collector: LiveCollector) -> None:
    response = httpx.get(collector.url + "/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    policy = dict(
        part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";") if part.strip()
    )
    assert policy["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src", "img-src"):
        assert policy[directive] == "'self'", directive
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert 'id="signin-form"' in response.text
    assert "{{" not in response.text


def test_every_asset_is_served_with_its_content_type(collector: LiveCollector) -> None:
    page = httpx.get(collector.url + "/dashboard").text
    urls = asset_urls(page)
    named = {url.split("/")[-1].split("?")[0] for url in urls}
    assert named == set(ASSETS) - {PAGE}, "the page must use every asset, and only those"
    for url in urls:
        name = url.split("/")[-1].split("?")[0]
        response = httpx.get(collector.url + url)
        assert response.status_code == 200, url
        suffix = name[name.rfind(".") :]
        assert response.headers["content-type"] == CONTENT_TYPES[suffix], url
        assert response.content == ASSETS[name].body
        # Versioned URLs never change their content: a browser may keep them a year.
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"


def test_an_unversioned_or_stale_asset_url_is_revalidated(collector: LiveCollector) -> None:
    for query in ("", "?v=0000000000000000"):
        response = httpx.get(f"{collector.url}/dashboard/static/dashboard.js{query}")
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-cache"
    etag = response.headers["etag"]
    again = httpx.get(
        collector.url + "/dashboard/static/dashboard.js", headers={"If-None-Match": etag}
    )
    assert again.status_code == 304
    assert again.content == b""
    head = httpx.head(collector.url + "/dashboard/static/dashboard.js")
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(ASSETS["dashboard.js"].body)


@pytest.mark.parametrize("name", ["nothing.js", "index.html", "..%2Fapp.py", "__init__.py"])
def test_anything_else_is_a_404_that_names_it(collector: LiveCollector, name: str) -> None:
    response = httpx.get(f"{collector.url}/dashboard/static/{name}")
    assert response.status_code == 404
    assert response.headers["x-amzn-errortype"] == "NotFoundException"
    assert "The dashboard has no asset" in response.json()["Message"] or (
        "No route matches" in response.json()["Message"]
    )


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_no_asset_names_another_host(name: str) -> None:
    text = ASSETS[name].body.decode("utf-8")
    found = {url for url in URL.findall(text) if url not in NAMESPACES}
    # `//` also starts comments in JS and CSS; only what looks like a host counts.
    hosts = {url for url in found if re.match(r"(?:https?:)?//[\w-]+(?:\.[\w-]+)+", url)}
    assert not hosts, f"{name} names another host: {sorted(hosts)}"
    assert "@import" not in text
    assert not re.search(r"url\(\s*['\"]?(?!data:|#)", text), f"{name} loads a url()"
