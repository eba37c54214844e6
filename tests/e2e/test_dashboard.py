"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against
a live collector loaded with `homing-collector demo`.

The browser is /usr/bin/chromium, which scripts/install puts there (`apt-get install
chromium`). The test saves screenshots as artifacts: test-artifacts/dashboard.png (the
default 30 days) and test-artifacts/dashboard-14-days.png (after the date range changed),
at the root of the repository.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import App, LiveCollector, run_cli
from tests.e2e.conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHARTS = [
    "active-users", "sticky-factor", "sessions", "retention", "events", "event-trend",
    "funnel", "revenue", "platforms", "demographics", "campaigns", "campaign-treatments",
    "campaign-hours",
]  # fmt: skip
FUNNEL = "product.view,cart.add,checkout.start,_monetization.purchase"


def chart_states(page: Any) -> dict[str, dict[str, str | None]]:
    result: dict[str, dict[str, str | None]] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('[data-chart]')].map(
            (el) => [el.dataset.chart, {state: el.dataset.state || null,
                                        points: el.dataset.points || null,
                                        range: el.dataset.range || null}]))"""
    )
    return result


def wait_for_charts(page: Any, names: list[str], expected_range: str) -> None:
    """Wait until every chart in `names` has drawn the range, with data or not."""
    page.wait_for_function(
        """([names, range]) => names.every((name) => {
            const el = document.querySelector(`[data-chart="${name}"]`);
            return el && el.dataset.range === range
                && ["ready", "empty", "error"].includes(el.dataset.state);
        })""",
        arg=[names, expected_range],
    )


def test_dashboard_shows_the_demo_data(
    start_collector: Callable[..., LiveCollector], tmp_path: Path
) -> None:
    db = tmp_path / "demo.db"
    demo = json.loads(run_cli("--db", str(db), "demo", "--devices", "300", "--json"))
    collector = start_collector(db)
    app_id, token = demo["application_id"], demo["admin"]["token"]
    url = demo["dashboard"].replace("http://127.0.0.1:8080", collector.url)
    api = httpx.Client(base_url=f"{collector.url}/v1/apps/{app_id}/analytics",
                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    fresh = collector.create_app("empty")  # before the browser: its event loop runs from then on
    with api:
        _drive(collector, url, app_id, token, api, fresh, tmp_path)


def _drive(
    collector: LiveCollector,
    url: str,
    app_id: str,
    token: str,
    api: httpx.Client,
    fresh: App,
    tmp: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Chromium is missing: run scripts/install (apt-get install chromium)"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
            timezone_id="UTC",
            locale="en-US",
        )
        context.set_default_timeout(30_000)
        try:
            _check(context.new_page(), collector, url, app_id, token, api, fresh)
        finally:
            context.close()


def _check(
    page: Any,
    collector: LiveCollector,
    url: str,
    app_id: str,
    token: str,
    api: httpx.Client,
    fresh: App,
) -> None:
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    # Answers that are not 2xx, which the console also reports as failed loads.
    refused: list[str] = []
    page.on(
        "response",
        lambda response: (
            refused.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    # Anything the page asks of another host fails the test (and would fail offline).
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith(collector.url)
            else problems.append(f"request to another host: {request.url}")
        ),
    )

    # A wrong token is refused and the form says so.
    page.goto(f"{url}&funnel={FUNNEL}")
    assert page.input_value("#signin-app") == app_id  # the demo's link names the app
    page.fill("#signin-token", "hm_admin_not-a-real-token")
    page.click("#signin-submit")
    page.wait_for_selector("#signin-error:not([hidden])")
    assert "not valid" in page.inner_text("#signin-error")
    assert refused == [f"403 {collector.url}/v1/apps/{app_id}"], refused
    refused.clear()

    page.fill("#signin-token", token)
    page.click("#signin-submit")
    page.wait_for_selector("#app:not([hidden])")
    end = datetime.now(timezone.utc).date()
    default_range = f"{end - timedelta(days=29)}..{end}"
    wait_for_charts(page, CHARTS, default_range)
    states = chart_states(page)
    for name in CHARTS:
        assert states[name]["state"] == "ready", (name, states[name], page.inner_text("#banner"))
        assert int(states[name]["points"] or 0) > 0, (name, states[name])
    # One point per day and series: DAU, WAU and MAU over 30 days.
    assert states["active-users"]["points"] == str(3 * 30)

    # The headline numbers are the API's.
    usage = api.get("/usage", params={"start": str(end - timedelta(days=29)), "end": str(end)})
    assert usage.status_code == 200, usage.text
    summary = usage.json()["summary"]
    assert page.inner_text("#kpi-mau").replace(",", "") == str(summary["mau"])
    assert page.inner_text("#kpi-sessions").replace(",", "") == str(summary["sessions"])
    funnel = page.inner_text('[data-chart="funnel"]')
    assert "product.view" in funnel and "_monetization.purchase" in funnel
    assert "weekend-sale" in page.inner_text('[data-chart="campaigns"]')

    # One campaign per treatment: the demo's A/B campaign, its numbers the API's.
    page.click('#campaign-tabs button:text-is("Spring sale A/B")')
    # Its view is drawn once its tab is the active one and the table is no longer loading.
    page.wait_for_function(
        """() => {
            const active = document.querySelector('#campaign-tabs button.active');
            const table = document.querySelector('[data-chart="campaign-treatments"]');
            return active !== null && active.innerText === 'Spring sale A/B'
                && !table.classList.contains('is-loading') && table.innerText.includes('discount');
        }"""
    )
    ab = page.get_attribute("#campaign-tabs button.active", "data-campaign")
    view = api.get(f"/campaigns/{ab}", params={"start": str(end - timedelta(days=29)),
                                              "end": str(end)}).json()  # fmt: skip
    rows = page.query_selector_all('[data-chart="campaign-treatments"] tbody tr')
    assert [r.get_attribute("data-treatment") for r in rows] == ["all", "0", "1"]
    cells = [c.inner_text().replace(",", "") for c in rows[2].query_selector_all("td")]
    discount = view["treatments"][1]
    assert cells[:2] == [str(discount["sent"]), str(discount["delivered"])]
    assert cells[5] == str(discount["devices_targeted"])
    hours = chart_states(page)["campaign-hours"]
    assert hours["state"] == "ready"
    assert hours["points"] == str(len(view["sessions_by_hour"]))

    # Another demographic: the tab re-queries the audience chart alone.
    page.click('#demographics-tabs button[data-dimension="app_version"]')
    page.wait_for_function(
        """() => document.querySelector('[data-chart="demographics"]').innerText
                 .includes('3.2.0')"""
    )
    assert chart_states(page)["demographics"]["points"] == "4"  # the demo's four versions
    page.click('#demographics-tabs button[data-dimension="country"]')
    page.wait_for_function(
        """() => document.querySelector('[data-chart="demographics"]').innerText
                 .includes('US')"""
    )

    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # Top events with an attribute filter: product views by category, only some categories.
    page.select_option("#events-type", "product.view")
    page.fill("#events-breakdown", "category")
    page.fill("#events-include", "category:shoes,books")
    page.click("#events-filter button[type=submit]")
    page.wait_for_function(
        """() => document.querySelector('[data-chart="event-breakdown"]').dataset.state
                 === 'ready'"""
    )
    breakdown = page.inner_text('[data-chart="event-breakdown"]')
    assert "shoes" in breakdown and "books" in breakdown and "garden" not in breakdown
    assert chart_states(page)["event-breakdown"]["points"] == "2"

    # A filter the API refuses: its message shows where the event charts were.
    page.fill("#events-include", "category")
    page.click("#events-filter button[type=submit]")
    page.wait_for_function(
        """() => document.querySelector('[data-chart="events"]').dataset.state === 'error'"""
    )
    assert "include: 'category' must be" in page.inner_text('[data-chart="events"]')
    assert len(refused) == 1 and refused[0].startswith("400 "), refused
    refused.clear()
    page.fill("#events-include", "")
    page.select_option("#events-type", "")
    page.click("#events-filter button[type=submit]")
    page.wait_for_function(
        """() => document.querySelector('[data-chart="events"]').dataset.state === 'ready'"""
    )

    # A new date range re-queries everything, and every chart draws the new range.
    start = end - timedelta(days=13)
    page.fill("#range-start", str(start))
    page.fill("#range-end", str(end))
    page.click("#range-apply")
    wait_for_charts(page, CHARTS, f"{start}..{end}")
    states = chart_states(page)
    for name in CHARTS:
        assert states[name]["state"] == "ready", (name, states[name])
    assert states["active-users"]["points"] == str(3 * 14)
    assert int(states["sessions"]["points"] or 0) <= 14
    assert f"start={start}" in page.url
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "dashboard-14-days.png"), full_page=True)

    # Counting devices instead of users re-queries every chart.
    page.click('#count-by button[data-by="endpoints"]')
    page.wait_for_function(
        """(names) => names.every((name) => {
            const el = document.querySelector(`[data-chart="${name}"]`);
            return el.dataset.by === 'endpoints' && el.dataset.state === 'ready';
        })""",
        arg=CHARTS,
    )
    assert page.inner_text(".kpi-label >> nth=0").lower() == "daily active devices"
    by_endpoint = api.get(
        "/usage", params={"start": str(start), "end": str(end), "by": "endpoints"}
    ).json()["summary"]
    by_user = api.get("/usage", params={"start": str(start), "end": str(end)}).json()["summary"]
    assert by_endpoint["mau"] > by_user["mau"]  # some users have several devices
    assert page.inner_text("#kpi-mau").replace(",", "") == str(by_endpoint["mau"])
    assert "by=endpoints" in page.url

    # Signing out forgets the token: a reload asks for it again.
    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    page.reload()
    page.wait_for_selector("#signin:not([hidden])")
    assert page.evaluate("() => sessionStorage.getItem('homing.token')") is None

    # An application without data: every chart says so, none fails.
    page.goto(f"{collector.url}/dashboard?app={fresh.id}")
    page.fill("#signin-token", fresh.admin.token)
    page.click("#signin-submit")
    wait_for_charts(page, CHARTS, default_range)
    states = chart_states(page)
    for name in CHARTS:
        assert states[name]["state"] == "empty", (name, states[name])
    assert page.inner_text("#kpi-sessions") == "0"
    assert page.is_hidden("#banner")
    assert not problems, problems
    assert not refused, refused
