"""The dashboard: one HTML page and its static assets, served by the collector itself.

Nothing comes from another host: no CDN, no web fonts, and a Content-Security-Policy that
allows this origin alone. The page signs in with an application's admin token, keeps it
in the tab's sessionStorage, and reads the analytics JSON API with it.

Asset URLs carry a hash of their content (`?v=...`), so that a browser may keep them for
a year and still never runs an old script against a new page.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from homing_collector.errors import not_found

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
IMMUTABLE = "public, max-age=31536000, immutable"
PAGE = "index.html"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    version: str  # a hash of the body

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def _version(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def load_assets() -> dict[str, Asset]:
    """Every file of `static/` by name, and the page with its asset URLs filled in."""
    assets: dict[str, Asset] = {}
    folder = resources.files(__package__) / "static"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in CONTENT_TYPES and entry.name != PAGE:
            body = entry.read_bytes()
            assets[entry.name] = Asset(body, CONTENT_TYPES[suffix], _version(body))
    page = (folder / PAGE).read_text("utf-8")
    for name, asset in assets.items():
        page = page.replace(f"{{{{{name}}}}}", f"/dashboard/static/{name}?v={asset.version}")
    if "{{" in page:
        raise RuntimeError(f"dashboard/static/{PAGE} names an asset that does not exist")
    body = page.encode()
    assets[PAGE] = Asset(body, CONTENT_TYPES[".html"], _version(body))
    return assets


ASSETS = load_assets()


def _answer(request: Request, asset: Asset, cache_control: str) -> Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": asset.etag}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else asset.body
    response = Response(body, media_type=asset.content_type, headers=headers)
    if request.method == "HEAD":
        response.headers["content-length"] = str(len(asset.body))
    return response


async def page(request: Request) -> Response:
    # Always revalidated: the page names the current asset versions.
    return _answer(request, ASSETS[PAGE], "no-cache")


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    asset = ASSETS.get(name)
    if asset is None or name == PAGE:
        raise not_found(f"The dashboard has no asset {name!r}")
    versioned = request.query_params.get("v") == asset.version
    return _answer(request, asset, IMMUTABLE if versioned else "no-cache")
