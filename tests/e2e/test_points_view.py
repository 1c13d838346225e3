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
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.test_browser import (  # noqa: F401 (server and shots are fixtures)
    APP_STATE,
    ARGS,
    CHROMIUM,
    DATASET,
    LIMITS,
    arm,
    assert_no_traceback,
    open_select,
    runs,
    server,
    shots,
    wait_run,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"needs {CHROMIUM}: apt-get install chromium"
    ),
]
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


# the visible point farthest from its nearest neighbour
_LONELY = """() => {
  const v = window.__points, pos = v.panels[0].pos, n = v.d.n;
  let best = 0, far = -1;
  for (let i = 0; i < n; i++) {
    let near = Infinity;
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      const dx = pos[2 * i] - pos[2 * j], dy = pos[2 * i + 1] - pos[2 * j + 1];
      near = Math.min(near, dx * dx + dy * dy);
    }
    if (near > far) { far = near; best = i; }
  }
  return best;
}"""


# size 4, zoomed in 1.6 steps on the grid cell holding the most points
_DENSEST = """() => {
  const v = window.__points, g = v.panels[0].grid;
  let most = 0, c = 0;
  for (let k = 0; k < g.g * g.g; k++) {
    const m = g.start[k + 1] - g.start[k];
    if (m > most) { most = m; c = k; }
  }
  v.size = 4;
  v.sizeCtl.value = 4;
  const cx = ((c % g.g) + 0.5) * 1000 / g.g, cy = (Math.floor(c / g.g) + 0.5) * 1000 / g.g;
  v.setView(0, {...v.viewStates.p0, cx, cy, zoom: v.viewStates.p0.zoom + 1.6});
}"""


def _status(frame) -> str:
    return frame.locator(".pv-status").inner_text()


def _gray(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float64)


def box_select(page, fx: tuple[float, float] = (0.05, 0.95)) -> str:
    """Drag a box over most of Explore's points view (from fraction fx[0] to fx[1] of its
    width and height); returns the page's 'N selected' text once the run it starts is done."""
    view = page.frame_locator(FRAME)
    page.locator(FRAME).scroll_into_view_if_needed()
    view.get_by_role("button", name="Box").click()
    stage = view.locator(".pv-stage").bounding_box()
    n = runs(page)
    a, b = fx
    page.mouse.move(stage["x"] + a * stage["width"], stage["y"] + a * stage["height"])
    page.mouse.down()
    page.mouse.move(stage["x"] + b * stage["width"], stage["y"] + b * stage["height"], steps=10)
    page.mouse.up()
    wait_run(page, n, timeout_s=60)
    picked = page.get_by_text(re.compile(r"\d+ selected")).first
    picked.wait_for()
    return picked.inner_text()


def test_points_view_zoom_hover_colour_filter_and_box_selection(server, shots):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
    model = {"digits": "ddpm-digits", "fashion-mnist": "ddpm-fashion-mnist"}.get(
        DATASET, "ddpm-digits"
    )
    link = (
        f"{server.url}/?model={model}&dataset={DATASET}&train={LIMITS[0]}&test={LIMITS[1]}&proj=pca"
    )
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
            n_test = frame.evaluate("() => window.__points.d.n")
            sent = frame.evaluate(
                "() => ({url: window.__points.d.atlas.url, inline: !!window.__points.d.atlas.png})"
            )  # the atlas is fetched from the server's media store, not resent in every message
            assert sent["url"].startswith("/media/") and not sent["inline"], sent
            everything = f"{n_test:,} of {n_test:,}"
            assert _status(view).startswith(everything + " shown"), _status(view)

            # Zoomed out: dots. Zoom in on one image: its thumbnail is drawn where its point is.
            frame.evaluate(
                "() => { const v = window.__points; v.size = 2; v.zoomAt({p: 0, x: v.rect(0).w / 2, y: v.rect(0).h / 2}, -1.5); }"
            )
            frame.wait_for_function(
                "() => /zoom in for thumbnails/.test(window.__points.status.textContent)"
            )
            stage = view.locator(".pv-stage").bounding_box()
            target = frame.evaluate(_LONELY)  # no neighbour's thumbnail can cover it
            frame.evaluate(  # centre it, so its thumbnail grows inside the view
                "(i) => { const v = window.__points, p = v.panels[0].pos;"
                " v.setView(0, {...v.viewStates.p0, cx: p[2 * i], cy: p[2 * i + 1]}); }",
                target,
            )
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
            crop = shot[round(y0) : round(y0 + side), round(x0) : round(x0 + side)]
            cell = np.asarray(at["cell"], np.float64).reshape(at["n"], at["n"], 4)[..., 0]
            from PIL import Image

            # the screenshot's square back at the atlas cell's resolution, edges left out
            small = Image.fromarray(crop.astype(np.uint8)).resize(cell.shape[::-1], Image.BOX)
            crop = np.asarray(small, np.float64)[1:-1, 1:-1]
            want = cell[1:-1, 1:-1]
            corr = np.corrcoef(crop.ravel(), want.ravel())[0, 1]
            others = []  # the same square against 12 other images' cells
            for j in range(1, 13):
                o = frame.evaluate(_CELL, (target + 7 * j) % n_test)
                cell_o = np.asarray(o["cell"], np.float64).reshape(o["n"], o["n"], 4)[..., 0]
                others.append(np.corrcoef(crop.ravel(), cell_o[1:-1, 1:-1].ravel())[0, 1])
            print(
                f"\nthumbnail of test image {target}: {at['side']:.0f} px, correlation {corr:.2f}"
                f" (other images: at most {np.nanmax(others):.2f})"
            )
            assert crop.std() > 20, "the thumbnail has the image's contrast, not a flat dot"
            assert corr > 0.6 and corr > np.nanmax(others) + 0.1, (
                f"the drawn thumbnail is image {target}'s cell (r={corr:.2f}, others {others})"
            )

            # Hover: the image, its label, prediction and index.
            page.mouse.move(stage["x"] + at["x"] + 1, stage["y"] + at["y"] + 1)
            tip = view.locator(".pv-tip")
            tip.wait_for(state="visible")
            assert tip.get_attribute("data-index") is not None
            assert "label" in tip.inner_text() and "predicted" in tip.inner_text()
            view.get_by_role("button", name="Fit").click()
            frame.evaluate(_DENSEST)  # the README's picture: the densest part, hovered
            page.mouse.move(stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2)
            page.wait_for_timeout(600)
            page.screenshot(path=str(shots / "points-view.png"))
            view.get_by_role("button", name="Fit").click()

            # Search by class name: only the images of class 3 stay.
            name, size = frame.evaluate(
                "() => { const d = window.__points.d; let c = 0;"
                " for (let i = 0; i < d.n; i++) c += d.labels[i] === 3; return [d.names[3], c]; }"
            )
            shows = "(s) => window.__points.status.textContent.startsWith(s)"
            n = runs(page)
            box = page.get_by_label("Show classes named", exact=True)
            box.fill(name)
            box.press("Enter")
            wait_run(page, n)
            frame.wait_for_function(shows, arg=f"{size:,} of")
            box.fill("")
            n = runs(page)
            box.press("Enter")
            wait_run(page, n)
            frame.wait_for_function(shows, arg=everything)

            # Colour by correct / wrong: the legend says so; hiding "correct" leaves the wrong.
            n = runs(page)
            open_select(page, "Colour points by", "correct or wrong").click()
            wait_run(page, n)
            legend = view.locator(".pv-legend span")
            legend.filter(has_text="wrong").wait_for()
            wrong = int(re.search(r"\((\d+)\)", legend.filter(has_text="wrong").inner_text())[1])
            legend.filter(has_text="correct").click()
            frame.wait_for_function(shows, arg=f"{wrong:,} of")
            legend.filter(has_text="correct").click()

            # Box selection: the grid, the per-class table and the CSV fill.
            text = box_select(page)
            count = int(re.search(r"([\d,]+) selected", text)[1].replace(",", ""))
            print(f"box selection: {count} images")
            assert count > n_test // 2, text
            tiles = page.locator(".dfe-tile, [data-testid='stImage']")
            assert tiles.count() >= min(count, 48) - 1, "the grid shows the selected images"
            page.get_by_role("button", name="These images (CSV)").wait_for()
            page.locator('[data-testid="stDataFrame"]').first.wait_for()  # the per-class table
            assert f"{count:,} selected" in _status(view), "the view marks the same selection"
            assert_no_traceback(page, "after the selection")
            assert not outside, f"requests left the machine: {outside[:5]}"
        except Exception:
            page.screenshot(path=str(server.log.with_name("failure.png")))
            print(f"server log:\n{server.log.read_text()[-3000:]}")
            raise
        finally:
            browser.close()
