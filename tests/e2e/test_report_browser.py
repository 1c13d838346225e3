"""The HTML report opens offline in headless Chromium: no request leaves the file, figures render.

Debian's Chromium through Playwright's `executable_path` (never `playwright install`); every
request other than the report file itself is aborted and recorded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.report import write_html_report
from explorer.results import load_table

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
SWEEP = Path(__file__).resolve().parents[2] / "assets" / "results" / "fashion-mnist-sweep.csv"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"needs {CHROMIUM}: apt-get install chromium"
    ),
]


def test_report_renders_offline(tmp_path):
    from playwright.sync_api import sync_playwright

    out = write_html_report(load_table(SWEEP), tmp_path / "report.html", source=SWEEP)
    url = out.resolve().as_uri()
    attempted, errors = [], []

    def guard(route):
        attempted.append(route.request.url)
        if route.request.url == url:
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", guard)
            page.goto(url, wait_until="load")
            page.wait_for_function(
                "document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=60_000
            )
            plots = page.evaluate(
                """() => [...document.querySelectorAll('.js-plotly-plot')].map(p => ({
                    svg: p.querySelectorAll('svg.main-svg').length,
                    marks: p.querySelectorAll('.heatmaplayer image, .scatterlayer .trace, canvas').length,
                    title: p.querySelector('.gtitle')?.textContent || ''}))"""
            )
        finally:
            browser.close()
    assert attempted == [url], f"only the file itself is requested, got {attempted}"
    assert not errors, f"JavaScript errors: {errors}"
    assert len(plots) == 3, f"heatmap and two curve figures, got {plots}"
    for p in plots:
        assert p["svg"] >= 1 and p["marks"] >= 1, f"figure drew nothing: {p}"
    assert any("Top-1 (%) by block and timestep" in p["title"] for p in plots), plots
