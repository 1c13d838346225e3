"""End to end in Chromium: the Similarity page draws the cross-model alignment maps (this model
against its random-weights twin: blocks × blocks, and blocks × timesteps against the input
pixels), with the bootstrap interval in a cell's hover. Reuses test_browser's server and
helpers."""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.test_browser import (  # noqa: F401 - `server` and `shots` are fixtures
    ARGS,
    CHROMIUM,
    DATASET,
    LIMITS,
    arm,
    assert_no_traceback,
    pytestmark,
    server,
    shots,
)


def similarity_link(url: str) -> str:
    """The Similarity page on test_browser's pair (digits unless E2E_DATASET=fashion-mnist:
    then the default pair, served from the warm seed); two timesteps for the blocks × t map."""
    if DATASET == "fashion-mnist":
        return f"{url}/similarity"
    train, test = LIMITS
    return (
        f"{url}/similarity?model=ddpm-digits&dataset=digits&train={train}&test={test}&ts=10&ts=100"
    )


def test_similarity_draws_the_cross_model_maps(server, shots):  # noqa: F811 - fixtures
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
    link = similarity_link(server.url)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.time()
            page.goto(link)
            arm(page)
            caption = page.get_by_text("Hover a cell for its 95% bootstrap interval")
            caption.first.wait_for(timeout=600_000)
            page.wait_for_function(
                "document.querySelectorAll('[data-testid=stPlotlyChart] .main-svg').length >= 4",
                timeout=120_000,
            )
            print(f"\nsimilarity with both alignment maps in {time.time() - t0:.1f}s")
            assert_no_traceback(page, "similarity")
            charts = page.locator('[data-testid="stPlotlyChart"]')
            assert charts.count() == 4, "two CKA maps, then the two alignment maps"
            titles = page.evaluate(
                "() => [...document.querySelectorAll('[data-testid=stPlotlyChart] .gtitle')]"
                ".map(t => t.textContent)"
            )
            assert "input pixels" in titles[3], f"the blocks x t map: {titles}"
            cross = charts.nth(2)
            cross.scroll_into_view_if_needed()
            page.wait_for_timeout(800)
            cells = cross.locator(".heatmaplayer image, .heatmaplayer .hm")
            assert cells.count() >= 1, "the blocks x blocks map is drawn"
            box = cross.locator(".nsewdrag").first.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
            hover = page.locator(".hoverlayer .hovertext").first
            hover.wait_for(timeout=10_000)
            text = hover.text_content()
            assert re.search(r": -?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]", text), (
                f"a cell's hover shows its value and interval: {text!r}"
            )
            page.screenshot(path=str(shots / "similarity-maps.png"), full_page=True)
        finally:
            browser.close()
