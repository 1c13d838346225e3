"""The demo path in Chromium at 1440×1000 on a fresh cache (issue 26): Explore → Sweep → click a
heatmap cell → Explore opens on that cell → Compare on trained vs random weights.

Along the way: the story line and the limits notice on Explore, the timestep slider's marks
(the shipped grid), no text box overlapping another in the Sweep figures (boxes from the DOM),
the clicked cell being the one that opens, "Across timesteps" off after the jump, Compare's
gain from training drawn positive, and no request leaving the app (the favicon is local).
Each step's time is printed (`-s`): the closing note's demo timings.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.e2e.test_browser import (
    APP_STATE,
    ARGS,
    CHROMIUM,
    ROOT,
    arm,
    assert_no_traceback,
    metric,
    runs,
    server,  # noqa: F401 - the fixture: a `streamlit run app.py` with its own fresh cache
    umap_landed,
    wait_run,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"needs {CHROMIUM}: apt-get install chromium"
    ),
]
VIEWPORT = {"width": 1440, "height": 1000}
LOCAL = {"127.0.0.1", "localhost"}

# every pair of text boxes in one figure that overlap by more than 2 px both ways
_OVERLAPS = """() => {
  const out = [];
  const plots = [...document.querySelectorAll('[data-testid=stMain] .js-plotly-plot')];
  for (const plot of plots) {
    const title = (plot.querySelector('.gtitle')?.textContent || 'figure').slice(0, 40);
    const boxes = [...plot.querySelectorAll('svg text')]
      .filter(t => t.textContent.trim() && getComputedStyle(t).display !== 'none'
        && getComputedStyle(t).visibility !== 'hidden' && !t.closest('.hoverlayer'))
      .map(t => ({s: t.textContent.trim().slice(0, 24), r: t.getBoundingClientRect()}))
      .filter(b => b.r.width > 0 && b.r.height > 0);
    for (let i = 0; i < boxes.length; i++)
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i].r, b = boxes[j].r;
        const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (w > 2 && h > 2) out.push(`${title}: '${boxes[i].s}' overlaps '${boxes[j].s}'`);
      }
  }
  return out;
}"""

# the screen point of a heatmap cell (x category, y category) of the figure with the click layer
_CELL_POINT = """([col, row]) => {
  const g = [...document.querySelectorAll('.js-plotly-plot')]
    .find(p => (p.data || []).some(t => t.name === 'cells'));
  if (!g) return null;
  const L = g._fullLayout, r = g.getBoundingClientRect();
  const ys = g.data[0].y, xs = g.data[0].x;
  return {x: r.left + L.xaxis._offset + L.xaxis.d2p(xs[col]),
          y: r.top + L.yaxis._offset + L.yaxis.d2p(ys[row]), xcat: xs[col], ycat: ys[row]};
}"""


def shipped_story():
    """The story line the pages must show, from the shipped table and its provenance."""
    import json

    from explorer import shipped
    from explorer.ui.services import read_table
    from explorer.ui.story import story

    csv = shipped.TABLES[("ddpm-fashion-mnist", "fashion-mnist")]
    prov = json.loads(shipped.sidecar_path(csv).read_text())
    return story(
        read_table(csv),
        "ddpm-fashion-mnist",
        head="linear",
        pool="2",
        train_limit=prov["train_images"],
        test_limit=None,
        test_images=prov["test_images"],
    )


def shoot(page, name: str, scroll: int = 0) -> None:
    """The README tour's picture `name`.png at 1440×1000, with UPDATE_SCREENSHOTS=1."""
    if os.environ.get("UPDATE_SCREENSHOTS") != "1":
        return
    page.evaluate("(y) => document.querySelector('[data-testid=stMain]').scrollTo(0, y)", scroll)
    page.wait_for_timeout(800)
    page.screenshot(path=str(ROOT / "assets" / "screenshots" / f"{name}.png"))


def explore_across_timesteps(page) -> None:
    """The tour's "Across timesteps" picture: Explore's aligned UMAP over the timestep set."""
    n = runs(page)
    page.get_by_role("link", name="Explore").click()
    wait_run(page, n, timeout_s=600)
    toggle = page.get_by_text("Show this block's aligned UMAP across timesteps")
    toggle.scroll_into_view_if_needed()
    n = runs(page)
    toggle.click()
    wait_run(page, n, timeout_s=900)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')]"
        ".some(g => g._transitionData && g._transitionData._frames.length)",
        timeout=300_000,
    )
    page.get_by_text("Across timesteps", exact=True).evaluate(
        "e => e.scrollIntoView({block: 'start'})"
    )
    page.wait_for_timeout(800)
    page.screenshot(path=str(ROOT / "assets" / "screenshots" / "timesteps.png"))


def settled(page, timeout_s: float = 600) -> None:
    page.wait_for_function(f"() => {APP_STATE} === 'notRunning'", timeout=timeout_s * 1000)


def step(log: list, name: str, t0: float) -> None:
    log.append((name, time.time() - t0))
    print(f"  {name}: {time.time() - t0:.1f}s")


def test_the_demo_path_tells_one_story(server):  # noqa: F811 - the imported fixture
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
    from explorer.data import default_dataset

    if default_dataset() != "fashion-mnist":
        pytest.skip("the demo path runs on the built-in Fashion-MNIST pair (its shipped sweep)")
    told = shipped_story()
    requests, failed, timings = [], [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.on("request", lambda r: requests.append(r.url))
        page.on("requestfailed", lambda r: failed.append(r.url))
        try:
            print("\ndemo path, fresh cache, 1440×1000:")
            # 1. Explore: the first accuracy, the story line, the limits notice, the marks
            t0 = time.time()
            page.goto(server.url)
            arm(page)
            first = metric(page, "Top-1 (test)")
            step(timings, f"Explore, first accuracy ({first})", t0)
            settled(page)
            page.get_by_text(told.line()).wait_for()  # e.g. "… block 7, t=10 — 86.9% vs …"
            assert page.get_by_text(f"the sweep used {told.limits_text()}").count() == 1
            assert page.get_by_role("button", name="Use the sweep's limits").count() == 1
            slider = page.locator('[data-testid="stSlider"]').first
            marks = slider.inner_text()
            assert "300" in marks and "999" not in marks, f"the slider spans the grid: {marks}"
            assert page.get_by_label("any t", exact=True).count() >= 1, "a box for any other t"
            assert_no_traceback(page, "explore")
            umap_landed(page)
            shoot(page, "explore")

            # 2. Sweep: the shipped table, its figures' text never overlapping
            t0, n = time.time(), runs(page)
            page.get_by_role("link", name="Sweep").click()
            wait_run(page, n)
            page.get_by_text("Top-1 (%) by block and timestep").first.wait_for()
            page.wait_for_timeout(1500)  # plotly lays the figures out after the run
            step(timings, "Sweep, shipped heatmap", t0)
            overlaps = page.evaluate(_OVERLAPS)
            assert not overlaps, "text boxes overlap in the Sweep figures:\n" + "\n".join(overlaps)
            assert_no_traceback(page, "sweep")

            # 3. Click a cell (t=50, third block): it is selected, in the list and the link
            heat = page.locator('[data-testid="stPlotlyChart"]').first
            heat.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            cell = page.evaluate(_CELL_POINT, [1, 2])
            assert cell, "the heatmap has its click layer"
            layer = cell["ycat"].split(" · ", 1)[1]
            t0, n = time.time(), runs(page)
            page.mouse.click(cell["x"], cell["y"])
            wait_run(page, n, timeout_s=60)
            step(timings, f"click the cell {cell['xcat']}, {cell['ycat']}", t0)
            box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Selected cell")
            chosen = box.locator("input").input_value()
            assert chosen.startswith("t=50 ·") and layer in chosen, chosen
            assert f"cell=50|{layer}" in unquote(page.url), page.url
            shoot(page, "sweep", scroll=330)

            # 4. Open in Explore: exactly that cell, "Across timesteps" off
            t0, n = time.time(), runs(page)
            page.get_by_role("button", name="Open in Explore →").click()
            wait_run(page, n, timeout_s=600)
            opened = metric(page, "Top-1 (test)")
            settled(page)
            step(timings, f"Explore on the clicked cell ({opened})", t0)
            url = unquote(page.url)
            assert "t=50" in url and f"block={layer}" in url and "tl=0" in url, url
            assert page.get_by_label("any t", exact=True).first.input_value() == "50"
            assert_no_traceback(page, "explore on the cell")

            # 5. Compare: trained vs random weights, training's gain drawn positive
            t0, n = time.time(), runs(page)
            page.get_by_role("link", name="Compare").click()
            wait_run(page, n, timeout_s=600)
            gain = page.locator('[data-testid="stMetric"]').filter(has_text="Top-1 B")
            delta = gain.locator('[data-testid="stMetricDelta"]').inner_text(timeout=600_000)
            settled(page)
            step(timings, f"Compare trained vs random (B − A {delta.strip()})", t0)
            assert page.get_by_role("radio", name="Trained vs random weights").is_checked()
            assert delta.strip().startswith("+"), f"training helped, drawn positive: {delta}"
            page.get_by_text("Per-class gain from training").first.wait_for()
            assert_no_traceback(page, "compare")
            umap_landed(page)
            shoot(page, "compare")
            if os.environ.get("UPDATE_SCREENSHOTS") == "1":  # the tour's last picture
                n = runs(page)
                page.get_by_role("link", name="Similarity").click()
                wait_run(page, n, timeout_s=600)
                settled(page)
                shoot(page, "similarity")
                explore_across_timesteps(page)

            icons = page.evaluate(
                "() => [...document.querySelectorAll('link[rel*=icon]')].map(l => l.href)"
            )
            assert icons and all(urlparse(h).hostname in LOCAL for h in icons), icons
        except Exception:
            page.screenshot(path=str(server.log.with_name("story-failure.png")))
            print(f"server log:\n{server.log.read_text()[-3000:]}")
            raise
        finally:
            browser.close()
    outside = sorted(
        {u for u in requests if not u.startswith(("data:", "blob:"))}
        - {u for u in requests if urlparse(u).hostname in LOCAL}
    )
    assert not outside, f"requests left the app: {outside}"
    assert not [u for u in failed if urlparse(u).hostname not in LOCAL], failed
    total = sum(s for _, s in timings)
    print(f"  demo path total: {total:.1f}s")
    assert re.fullmatch(r"\d+\.\d\d%", opened), opened
