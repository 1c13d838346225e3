"""End to end: Explore's images-as-points embedding in headless Chromium.

Zooms into the view and checks, on a screenshot, that the thumbnail of the image under the
cursor is drawn where its point is (its pixels match its cell of the atlas); hovers it; then
searches classes by name, colours by correct/wrong, hides a class from the legend, and drags
a box: the selection fills the image grid, the per-class table and the CSV button. No request
leaves the machine. The server and helpers are test_browser.py's.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from tests.e2e.test_browser import (  # noqa: F401, F811 (server and shots are fixtures)
    APP_STATE,
    ARGS,
    CHROMIUM,
    arm,
    assert_no_traceback,
    runs,
    server,
    shots,
    wait_run,
)

pytestmark = pytest.mark.e2e
FRAME = 'iframe[title$="explorer_points_view"]'
# screen position and size of test position i in panel 0, and its atlas cell as RGBA pixels
_CELL = """(i) => {
  const v = window.__points, vs = v.viewStates.p0, s = 2 ** vs.zoom, r = v.rect(0);
  const [x, y] = [v.panels[0].pos[2 * i], v.panels[0].pos[2 * i + 1]];
  const a = v.d.atlas, c = document.createElement('canvas');
  c.width = c.height = a.cell;
  const g = c.getContext('2d');
  g.drawImage(v.bitmap, (i % a.cols) * a.cell, Math.floor(i / a.cols) * a.cell, a.cell, a.cell, 0, 0, a.cell, a.cell);
  return {x: r.x + r.w / 2 + (x - vs.cx) * s, y: r.h / 2 + (y - vs.cy) * s, side: v.thumbPx(0),
          cell: Array.from(g.getImageData(0, 0, a.cell, a.cell).data), n: a.cell,
          frame: v.frames, thumbs: v.status.textContent};
}"""


def _status(frame) -> str:
    return frame.locator(".pv-status").inner_text()


def _gray(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float64)


def test_points_view_zoom_hover_colour_filter_and_box_selection(server, shots):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
    link = f"{server.url}/?model=ddpm-digits&dataset=digits&train=300&test=100&proj=pca"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        outside = []
        page.on(
            "request",
            lambda r: (
                outside.append(r.url)
                if re.match(r"https?://", r.url) and not r.url.startswith(server.url)
                else None
            ),
        )
        try:
            page.goto(link)
            arm(page)
            page.get_by_text("Embedding of the test features").wait_for(timeout=300_000)
            page.wait_for_function(f"() => {APP_STATE} === 'notRunning'", timeout=300_000)
            assert_no_traceback(page, "explore")
            iframe = page.locator(FRAME)
            iframe.scroll_into_view_if_needed()
            view = page.frame_locator(FRAME)
            view.locator(".pv-status").wait_for()
            frame = iframe.element_handle().content_frame()
            frame.wait_for_function("() => window.__points && window.__points.atlasFrameAt")
            assert _status(view).startswith("100 of 100 shown"), _status(view)

            # Zoomed out: dots. Zoom in on one image: its thumbnail is drawn where its point is.
            frame.evaluate(
                "() => { const v = window.__points; v.size = 2; v.zoomAt({p: 0, x: v.rect(0).w / 2, y: v.rect(0).h / 2}, -1.5); }"
            )
            frame.wait_for_function(
                "() => /zoom in for thumbnails/.test(window.__points.status.textContent)"
            )
            stage = view.locator(".pv-stage").bounding_box()
            target = 37
            at = frame.evaluate(_CELL, target)
            for _ in range(12):  # wheel over the image until its thumbnail is ~80 px
                page.mouse.move(stage["x"] + at["x"], stage["y"] + at["y"])
                page.mouse.wheel(0, -250)
                page.wait_for_timeout(150)
                at = frame.evaluate(_CELL, target)
                if at["side"] >= 80:
                    break
            page.mouse.move(5, 5)  # away: no hover box over the thumbnail
            page.wait_for_timeout(600)  # the full frame after the view stops
            at = frame.evaluate(_CELL, target)
            assert "thumbnails" in at["thumbs"] and at["side"] >= 40, at["thumbs"]
            shot = _gray(page.screenshot())
            side = at["side"] * (1 - 2 * 0.07)  # inside the coloured frame
            x0, y0 = stage["x"] + at["x"] - side / 2, stage["y"] + at["y"] - side / 2
            crop = shot[int(y0) + 2 : int(y0 + side) - 2, int(x0) + 2 : int(x0 + side) - 2]
            cell = np.asarray(at["cell"], np.float64).reshape(at["n"], at["n"], 4)[..., 0]
            from PIL import Image

            want = np.asarray(
                Image.fromarray(cell.astype(np.uint8)).resize(crop.shape[::-1], Image.NEAREST),
                np.float64,
            )
            corr = np.corrcoef(crop.ravel(), want.ravel())[0, 1]
            print(
                f"\nthumbnail of test image {target}: {at['side']:.0f} px, correlation {corr:.2f}"
            )
            assert crop.std() > 20, "the thumbnail has the image's contrast, not a flat dot"
            assert corr > 0.8, f"the drawn thumbnail is image {target}'s cell (r={corr:.2f})"

            # Hover: the image, its label, prediction and index.
            page.mouse.move(stage["x"] + at["x"] + 1, stage["y"] + at["y"] + 1)
            tip = view.locator(".pv-tip")
            tip.wait_for(state="visible")
            assert tip.get_attribute("data-index") is not None
            assert "label" in tip.inner_text() and "predicted" in tip.inner_text()
            view.get_by_role("button", name="Fit").click()

            # Search by class name: only the digits named 3 stay.
            n = runs(page)
            box = page.get_by_label("Show classes named", exact=True)
            box.fill("3")
            box.press("Enter")
            wait_run(page, n)
            frame.wait_for_function(
                "() => window.__points.status.textContent.startsWith('10 of 100')"
            )
            box.fill("")
            n = runs(page)
            box.press("Enter")
            wait_run(page, n)
            frame.wait_for_function(
                "() => window.__points.status.textContent.startsWith('100 of 100')"
            )

            # Colour by correct / wrong: the legend says so; hiding "correct" leaves the wrong.
            n = runs(page)
            page.locator('[data-testid="stSelectbox"]').filter(has_text="Colour points by").click()
            page.get_by_role("option", name="correct / wrong").click()
            wait_run(page, n)
            legend = view.locator(".pv-legend span")
            legend.filter(has_text="wrong").wait_for()
            wrong = int(re.search(r"\((\d+)\)", legend.filter(has_text="wrong").inner_text())[1])
            legend.filter(has_text="correct").click()
            frame.wait_for_function(
                f"() => window.__points.status.textContent.startsWith('{wrong} of 100')"
            )
            legend.filter(has_text="correct").click()

            # Box selection: the grid, the per-class table and the CSV fill.
            view.get_by_role("button", name="Box").click()
            stage = view.locator(".pv-stage").bounding_box()
            n = runs(page)
            page.mouse.move(stage["x"] + 0.05 * stage["width"], stage["y"] + 0.05 * stage["height"])
            page.mouse.down()
            page.mouse.move(
                stage["x"] + 0.95 * stage["width"], stage["y"] + 0.95 * stage["height"], steps=10
            )
            page.mouse.up()
            wait_run(page, n, timeout_s=60)
            picked = page.get_by_text(re.compile(r"\d+ selected")).first
            picked.wait_for()
            count = int(re.search(r"([\d,]+) selected", picked.inner_text())[1].replace(",", ""))
            print(f"box selection: {count} images")
            assert count > 50, picked.inner_text()
            tiles = page.locator(".dfe-tile, [data-testid='stImage']")
            assert tiles.count() >= min(count, 48) - 1, "the grid shows the selected images"
            assert page.get_by_role("button", name="These images (CSV)").count() == 1
            assert page.locator('[data-testid="stDataFrame"]').count() >= 1, "per-class table"
            assert f"{count:,} selected" in _status(view), "the view marks the same selection"
            assert_no_traceback(page, "after the selection")
            iframe.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            page.screenshot(path=str(shots / "points-view.png"))
            assert not outside, f"requests left the machine: {outside[:5]}"
        except Exception:
            page.screenshot(path=str(server.log.with_name("failure.png")))
            print(f"server log:\n{server.log.read_text()[-3000:]}")
            raise
        finally:
            browser.close()
